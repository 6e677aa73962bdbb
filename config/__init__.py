"""Config loading and validation: YAML + env expansion -> typed component configs."""

from config.schema import ByteSize, ConfigError, ConfigErrors, Duration, setting

__all__ = ["ByteSize", "ConfigError", "ConfigErrors", "Duration", "setting"]
