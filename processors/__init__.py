"""Processor registry: type name -> module (one line per processor)."""

from collector.component import Registry

PROCESSORS = Registry("processor", {
    "batch": "processors.batch",
    "memory_limiter": "processors.memory_limiter",
    "genai_normalize": "processors.genai_normalize",
    "genai_session": "processors.genai_session",
    "genai_cost": "processors.genai_cost",
    "genai_token_rate": "processors.genai_token_rate",
    "redaction": "processors.redaction",
    "sampling": "processors.sampling",
})
