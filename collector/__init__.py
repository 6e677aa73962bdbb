"""genai-collector runtime: CLI, config -> pipeline graph, receivers, telemetry, shutdown."""

__version__ = "0.1.0"
