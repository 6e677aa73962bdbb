"""``health_check``: the OTel Collector's health endpoint (``localhost:13133``) for orchestrators.

The same status is always served on ``/healthz`` of the telemetry address; this extension adds the
port that Kubernetes manifests written for the OTel Collector already probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.component import Factory
from collector.telemetry import TelemetryServer
from config.schema import setting


@dataclass
class HealthCheckConfig:
    endpoint: str = setting("127.0.0.1:13133", pattern=r"^(\[[0-9a-fA-F:.]+\]|[^:\s]*):\d{1,5}$",
                            doc="host:port serving GET / (and /healthz): 200 once every component started, "
                                "503 while starting or stopping, or while an exporter cannot write (the body gives the reasons)")


class HealthCheckExtension:
    def __init__(self, config: HealthCheckConfig, telemetry) -> None:
        self.server = TelemetryServer(telemetry, config.endpoint)

    def start(self) -> None:
        self.server.start()

    def set_status(self, status: str) -> None:
        self.server.status = status

    def shutdown(self) -> None:
        self.server.shutdown()


FACTORY = Factory("health_check", HealthCheckConfig,
                  lambda cfg, ctx: HealthCheckExtension(cfg, ctx.telemetry),
                  doc="the Collector's health endpoint (port 13133) for orchestrators",
                  example="""\
endpoint: 127.0.0.1:13133
""")
