"""Connector registry: type name -> module (one line per connector).

A connector is an exporter of one pipeline and a receiver of another (OTel Collector
``connectors:``); ``config/service.py`` checks the pairing and the signals it declares.
"""

from collector.component import Registry

CONNECTORS = Registry("connector", {
    "genai_metrics": "connectors.genai_metrics",
})
