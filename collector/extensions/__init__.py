"""Extension registry: type name -> module (one line per extension)."""

from collector.component import Registry

EXTENSIONS = Registry("extension", {
    "health_check": "collector.extensions.health_check",
    "ui": "collector.extensions.ui",
})
