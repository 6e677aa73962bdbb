"""The running collector: builds the component graph from a config, starts it, stops it cleanly.

Graph rules (as in the OTel Collector): a component configured but not named in a pipeline stays
idle; a receiver or exporter used by several pipelines is one instance; processors are instantiated
per pipeline; a connector is one instance, an exporter of the pipelines that list it as one and a
receiver (a source) of the others.  Start order is extensions, exporters, pipelines, receivers;
shutdown is the reverse, so nothing accepted is left behind: receivers stop taking data, pipelines
drain in the order data flows through connectors (a connector stops, with a last flush, once the
pipelines feeding it have drained), exporters flush.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from collector.component import ComponentContext
from collector.model import SIGNALS
from collector.pipeline import ExporterHandle, Fanout, IntakeSettings, Pipeline, Router
from collector.telemetry import Telemetry, TelemetryServer
from config.service import CollectorConfig, ComponentSpec

__all__ = ["Service", "StartupError"]

log = logging.getLogger("genai_collector.service")


class StartupError(Exception):
    """A component could not be built or started; the message is one line for the user."""


def _create(spec: ComponentSpec, telemetry: Telemetry, pipeline: str | None = None,
            config: CollectorConfig | None = None) -> Any:
    logger = logging.getLogger(f"genai_collector.{spec.kind}.{spec.id}")
    ctx = ComponentContext(spec.id, spec.kind, telemetry, logger, pipeline, config)
    try:
        return spec.factory.create(spec.config, ctx)
    except StartupError:
        raise
    except Exception as exc:  # noqa: BLE001 - turned into one clear line
        raise StartupError(f"{spec.kind} {spec.id}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: {text}"


class Service:
    def __init__(self, config: CollectorConfig, telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or Telemetry()
        self.telemetry_server = TelemetryServer(self.telemetry, config.service.telemetry.metrics.address)
        self.extensions: dict[str, Any] = {}
        self.exporters: dict[str, ExporterHandle] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.receivers: dict[str, Any] = {}
        self.connectors: dict[str, Any] = {}
        self._started_receivers: list[tuple[str, Any]] = []

    # -- build + start --------------------------------------------------------------------------

    def start(self) -> None:
        """Build and start everything; raise StartupError (after cleaning up) on failure."""
        self.telemetry_server.start()  # first, so /healthz says "starting" meanwhile
        try:
            self._build()
            for ext_id, ext in self.extensions.items():
                self._start_component("extension", ext_id, lambda e=ext: e.start())
            for pipeline in self.pipelines.values():
                pipeline.start()
            for rid, receiver in self.receivers.items():
                router = self._router(rid)
                self._start_component("receiver", rid, lambda r=receiver, c=router: r.start(c))
                self._started_receivers.append((rid, receiver))
        except StartupError:
            self.shutdown(timeout=5.0)
            raise
        self._set_status("ready")
        problems = self.telemetry.health_problems()
        log.info("collector %s: %d pipeline(s), receivers %s, exporters %s",
                 f"started but not ready ({'; '.join(problems)})" if problems else "ready",
                 len(self.pipelines), sorted(self.receivers), sorted(self.exporters))

    def _router(self, rid: str) -> Router:
        """A Fanout per signal over the pipelines of that signal that list receiver ``rid``."""
        fanouts = {}
        for signal in SIGNALS:
            pipelines = [p for pid, p in self.pipelines.items()
                         if p.signal == signal and rid in self.config.service.pipelines[pid].receivers]
            if pipelines:
                fanouts[signal] = Fanout(pipelines)
        return Router(rid, fanouts, self.telemetry)

    def _start_component(self, kind: str, cid: str, start) -> None:
        try:
            start()
        except StartupError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise StartupError(f"{kind} {cid}: {_reason(exc)}") from exc

    def _build(self) -> None:
        cfg = self.config
        t = self.telemetry
        for ext_id in cfg.service.extensions:
            self.extensions[ext_id] = _create(cfg.extensions[ext_id], t, config=cfg)
        for pid, pc in cfg.service.pipelines.items():
            for eid in pc.exporters:
                if eid not in self.exporters:
                    exporter = self._connector(eid) if eid in cfg.connectors else _create(cfg.exporters[eid], t)
                    handle = self.exporters[eid] = ExporterHandle(eid, exporter, t)
                    if handle.reports_health:
                        t.watch_health(f"exporter {eid}", handle.exporter)
            processors = [(proc_id, _create(cfg.processors[proc_id], t, pid)) for proc_id in pc.processors]
            intake = IntakeSettings.of(processors)
            self.pipelines[pid] = Pipeline(pid, processors, [self.exporters[e] for e in pc.exporters], t,
                                           intake.policy, intake.limit_bytes)
            for rid in pc.receivers:
                if rid not in self.receivers:
                    self.receivers[rid] = self._connector(rid) if rid in cfg.connectors else _create(cfg.receivers[rid], t)

    def _connector(self, cid: str) -> Any:
        """The one instance of connector ``cid`` (it appears as an exporter and as a receiver)."""
        if cid not in self.connectors:
            self.connectors[cid] = _create(self.config.connectors[cid], self.telemetry)
        return self.connectors[cid]

    # -- stop -------------------------------------------------------------------------------------

    def _set_status(self, status: str) -> None:
        self.telemetry_server.status = status
        for ext in self.extensions.values():
            if hasattr(ext, "set_status"):
                ext.set_status(status)

    def _drain(self, deadline: float) -> bool:
        """Drain the pipelines in data-flow order: a pipeline once every connector feeding it has
        stopped, a connector (last flush included) once every pipeline feeding it has drained."""
        pipelines = self.config.service.pipelines
        pending = dict(self.pipelines)
        stopped: set[str] = set()
        clean = True
        while pending or len(stopped) < len(self.connectors):
            ready = [pid for pid in pending
                     if all(r in stopped for r in pipelines[pid].receivers if r in self.connectors)] or list(pending)
            for pid in ready:
                if not pending.pop(pid).drain(deadline):
                    clean = False
                    log.error("pipeline %s: shutdown_timeout reached before it drained", pid)
                self.pipelines[pid].shutdown_processors()
            for cid, connector in self.connectors.items():
                if cid not in stopped and not any(cid in pipelines[pid].exporters for pid in pending):
                    stopped.add(cid)
                    try:
                        connector.shutdown()
                    except Exception:  # noqa: BLE001
                        log.exception("connector %s: shutdown failed", cid)
        return clean

    def shutdown(self, timeout: float | None = None) -> bool:
        """Receivers first, then drain pipelines, then flush exporters; True if nothing was cut short."""
        timeout = self.config.service.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._set_status("stopping")
        clean = True
        for rid, receiver in reversed(self._started_receivers):
            if rid in self.connectors:
                continue  # stopped below, once the pipelines feeding it have drained
            try:
                receiver.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("receiver %s: shutdown failed", rid)
        self._started_receivers.clear()
        clean = self._drain(deadline)
        for eid, handle in self.exporters.items():
            if eid in self.connectors:
                continue
            try:
                handle.exporter.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("exporter %s: shutdown failed", eid)
        for ext_id, ext in self.extensions.items():
            try:
                ext.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("extension %s: shutdown failed", ext_id)
        self.telemetry_server.shutdown()
        return clean
