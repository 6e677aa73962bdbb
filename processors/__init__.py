"""Processor registry: type name -> module (one line per processor)."""

from collector.component import Registry

PROCESSORS = Registry("processor", {
    "batch": "processors.batch",
    "memory_limiter": "processors.memory_limiter",
    "genai_session": "processors.genai_session",
    "sampling": "processors.sampling",
})
