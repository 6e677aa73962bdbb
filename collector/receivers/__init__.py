"""Receiver registry: type name -> module (one line per receiver)."""

from collector.component import Registry

RECEIVERS = Registry("receiver", {
    "otlp": "collector.receivers.otlp",
})
