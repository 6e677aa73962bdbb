"""The whole collector config: components by id, and the ``service`` section that wires them.

Mirrors ``otelcol/config.go``: top level ``receivers``, ``processors``, ``exporters``,
``connectors``, ``extensions``, ``service``; ids ``type`` or ``type/name``; ``service.pipelines`` maps pipeline
ids (``traces`` or ``traces/name``) to ordered component lists.  Every problem is collected and
reported with its path and line, so ``validate`` shows them all at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from collector.component import ID_TYPE_RE, Factory, Registry, split_id
from collector.model import SIGNALS
from config.files import CONFIG_FILE_LIMIT, read_bounded
from config.loader import load_yaml
from config.schema import ConfigError, ConfigErrors, Duration, build, setting

__all__ = ["CollectorConfig", "ComponentSpec", "PipelineConfig", "ServiceConfig", "load_config",
           "parse_config", "registries"]

_NAME_RE = r"^[^\s/]*$"


@dataclass
class PipelineConfig:
    receivers: list[str] = setting(default_factory=list, doc="receiver ids feeding the pipeline (at least one)")
    processors: list[str] = setting(default_factory=list, doc="processor ids, run in this order")
    exporters: list[str] = setting(default_factory=list, doc="exporter ids (at least one); each gets every batch")


@dataclass
class MetricsTelemetryConfig:
    address: str = setting("127.0.0.1:8888", pattern=r"^(\[[0-9a-fA-F:.]+\]|[^:\s]*):\d{1,5}$",
                           doc="where /metrics (Prometheus text) and /healthz are served; give each "
                               "collector on a host its own")
    level: Literal["none", "basic", "normal", "detailed"] = setting("normal", doc="accepted for compatibility "
                                                                    "with the Collector; every counter is kept")


@dataclass
class LogsTelemetryConfig:
    level: Literal["debug", "info", "warn", "error"] = setting("info", doc="least severe level logged (to stderr)")
    encoding: Literal["console", "json"] = setting("console", doc="console: readable lines; json: one object "
                                                   "per line (ts, level, logger, msg)")


@dataclass
class TelemetryConfig:
    metrics: MetricsTelemetryConfig = setting(default_factory=MetricsTelemetryConfig,
                                              doc="the collector's own metrics and health endpoint")
    logs: LogsTelemetryConfig = setting(default_factory=LogsTelemetryConfig, doc="the collector's own logs")


@dataclass
class ServiceConfig:
    """The ``service`` section: which components run, wired into pipelines, and the collector's own
    telemetry.  A component configured but named in no pipeline stays idle."""

    pipelines: dict[str, PipelineConfig] = setting(default_factory=dict, doc="pipeline id (a signal, e.g. "
                                                   "traces, or signal/name) -> its components")
    extensions: list[str] = setting(default_factory=list, doc="extension ids to start")
    telemetry: TelemetryConfig = setting(default_factory=TelemetryConfig, doc="the collector's own "
                                         "metrics and logs")
    shutdown_timeout: Duration = setting(30.0, doc="longest a graceful shutdown may take to drain pipelines "
                                         "and flush exporters (exit 1 if it runs out)")


@dataclass
class ComponentSpec:
    """One configured component: its id, type, factory and validated config object."""

    id: str
    kind: str
    type: str
    factory: Factory
    config: Any


@dataclass
class CollectorConfig:
    receivers: dict[str, ComponentSpec]
    processors: dict[str, ComponentSpec]
    exporters: dict[str, ComponentSpec]
    extensions: dict[str, ComponentSpec]
    service: ServiceConfig
    source: str = ""
    unset_env: list[str] = field(default_factory=list)
    connectors: dict[str, ComponentSpec] = field(default_factory=dict)


def registries() -> dict[str, Registry]:
    """kind (plural, as in YAML) -> registry; imported lazily to keep ``config`` import-light."""
    from collector.extensions import EXTENSIONS
    from collector.receivers import RECEIVERS
    from connectors import CONNECTORS
    from exporters import EXPORTERS
    from processors import PROCESSORS

    return {"receivers": RECEIVERS, "processors": PROCESSORS, "exporters": EXPORTERS,
            "connectors": CONNECTORS, "extensions": EXTENSIONS}


def _read(path: str | Path) -> tuple[str, str]:
    path = Path(path)
    try:
        return read_bounded(str(path), CONFIG_FILE_LIMIT).decode("utf-8"), str(path)
    except FileNotFoundError:
        raise ConfigErrors([ConfigError("", f"config file not found: {path}")]) from None
    except OSError as exc:
        raise ConfigErrors([ConfigError("", f"cannot read config file {path}: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigErrors([ConfigError("", f"cannot read config file {path}: not UTF-8 ({exc.reason} "
                                            f"at byte {exc.start})")]) from None


def load_config(path: str | Path) -> CollectorConfig:
    """Read, expand and validate a config file; raise ConfigErrors listing every problem."""
    return parse_config(*_read(path))


def load_section(path: str | Path, kind: str) -> dict[str, ComponentSpec]:
    """One section (``exporters``...) of a config file, expanded and validated as
    :func:`load_config` does, without importing the other sections' modules: the query CLI
    needs only the storage exporter, and the receivers' modules import gRPC (0.3 s)."""
    try:
        raw, lines, _ = load_yaml(*_read(path))
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    errors: list[ConfigError] = []
    built = _build_section(kind, registries()[kind], raw, lines, _reporter(lines, errors), errors)
    if errors:
        raise ConfigErrors(errors)
    return built


def _reporter(lines: dict, errors: list[ConfigError]) -> Callable[[tuple[str, ...], str], None]:
    """``err(path, message)``: record an error at the nearest line of ``path`` the YAML has."""
    def err(path: tuple[str, ...], message: str) -> None:
        line = next((lines[path[:i]] for i in range(len(path), 0, -1) if path[:i] in lines), None)
        errors.append(ConfigError("::".join(path), message, line))

    return err


def _build_section(kind: str, registry: Registry, raw: dict, lines: dict, err,
                   errors: list[ConfigError]) -> dict[str, ComponentSpec]:
    section = raw.get(kind) or {}
    if not isinstance(section, dict):
        err((kind,), "expected a mapping of component ids to configs")
        return {}
    built = {}
    for comp_id, comp_raw in section.items():
        spec = _build_component(kind, registry, str(comp_id), comp_raw, lines, err, errors)
        if spec is not None:
            built[str(comp_id)] = spec
    return built


def parse_config(text: str, source: str = "config") -> CollectorConfig:
    try:
        raw, lines, unset = load_yaml(text, source)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    errors: list[ConfigError] = []
    err = _reporter(lines, errors)
    known_top = ("receivers", "processors", "exporters", "extensions", "service", "connectors")
    for key in raw:
        if key not in known_top:
            err((str(key),), f"unknown key (valid keys: {', '.join(known_top)})")

    sections: dict[str, dict[str, ComponentSpec]] = {}
    configured: dict[str, set[str]] = {}  # ids as written, valid or not: no cascading errors
    for kind, registry in registries().items():
        section = raw.get(kind)
        configured[kind] = {str(k) for k in section} if isinstance(section, dict) else set()
        sections[kind] = _build_section(kind, registry, raw, lines, err, errors)

    service, service_errors = build(ServiceConfig, raw.get("service") or {}, ("service",), lines)
    errors.extend(service_errors)
    if service is not None:
        _check_service(service, configured, sections, err)
        _check_connectors(service, sections["connectors"], configured, err)

    if errors:
        raise ConfigErrors(errors)
    return CollectorConfig(sections["receivers"], sections["processors"], sections["exporters"],
                           sections["extensions"], service, source, unset, sections["connectors"])


def _build_component(kind, registry, comp_id, comp_raw, lines, err, errors) -> ComponentSpec | None:
    type_name, name = split_id(comp_id)
    path = (kind, comp_id)
    if not ID_TYPE_RE.match(type_name) or (name == "" and comp_id.endswith("/")) or "/" in name:
        err(path, f'invalid id "{comp_id}": the type must match [a-zA-Z][0-9a-zA-Z_]{{0,62}}, '
                  'optionally followed by "/name"')
        return None
    if type_name not in registry:
        err(path, f'unknown type: "{type_name}" for id: "{comp_id}" (valid values: [{", ".join(registry.types)}])')
        return None
    factory = registry.get(type_name)
    obj, comp_errors = build(factory.config_class, {} if comp_raw is None else comp_raw, path, lines)
    errors.extend(comp_errors)
    if obj is None:
        return None
    return ComponentSpec(comp_id, kind[:-1], type_name, factory, obj)


def _check_service(service: ServiceConfig, raw_ids: dict[str, set[str]],
                   sections: dict[str, dict[str, ComponentSpec]], err) -> None:
    if not service.pipelines:
        err(("service", "pipelines"), "at least one pipeline is required (e.g. traces)")
    for pid, pipeline in service.pipelines.items():
        signal, _, _ = pid.partition("/")
        path = ("service", "pipelines", pid)
        if signal not in SIGNALS:
            err(path, f'unsupported signal "{signal}" (supported: {", ".join(SIGNALS)})')
            continue
        for kind, ids in (("receivers", pipeline.receivers), ("processors", pipeline.processors),
                          ("exporters", pipeline.exporters)):
            seen: set[str] = set()
            for cid in ids:
                if cid not in raw_ids[kind] and not (kind != "processors" and cid in raw_ids["connectors"]):
                    err(path + (kind,), f'references {kind[:-1]} "{cid}" which is not configured')
                if cid in seen:
                    err(path + (kind,), f'references {kind[:-1]} "{cid}" multiple times')
                seen.add(cid)
        _check_signals(signal, pipeline, sections, path, err)
        _check_intake_order(pipeline.processors, sections["processors"], path + ("processors",), err)
        if not pipeline.receivers:
            err(path + ("receivers",), "must have at least one receiver")
        if not pipeline.exporters:
            err(path + ("exporters",), "must have at least one exporter")
    for ext in service.extensions:
        if ext not in raw_ids["extensions"]:
            err(("service", "extensions"), f'references extension "{ext}" which is not configured')


def _check_signals(signal: str, pipeline: PipelineConfig, sections: dict[str, dict[str, ComponentSpec]],
                   path: tuple[str, ...], err) -> None:
    """Every component of a pipeline must support its signal (as its factory declares)."""
    for kind, ids in (("receivers", pipeline.receivers), ("processors", pipeline.processors),
                      ("exporters", pipeline.exporters)):
        for cid in ids:
            spec = sections[kind].get(cid)
            if spec is not None and signal not in spec.factory.signals:
                supported = ", ".join(sorted(spec.factory.signals))
                err(path + (kind,), f'{kind[:-1]} "{cid}" does not support {signal} '
                                    f'(type {spec.type} supports: {supported})')


def _check_intake_order(ids: list[str], processors: dict[str, ComponentSpec], path: tuple[str, ...], err) -> None:
    """Intake processors (memory_limiter, batch) act where data enters the pipeline, before any
    processor runs: they must be listed first, in rank order, so the list reads as what happens."""
    first_other: str | None = None
    highest: tuple[int, str] | None = None  # the intake processor of the highest rank so far
    for cid in ids:
        spec = processors.get(cid)
        rank = spec.factory.intake_rank if spec is not None else None
        if spec is None:
            continue
        if rank is None:
            first_other = first_other or cid
        elif first_other is not None:
            err(path, f'processor "{cid}" acts at the pipeline intake (before any processor runs), so it must '
                      f'be listed before "{first_other}"')
        elif highest is not None and rank < highest[0]:
            err(path, f'processor "{cid}" must be listed before "{highest[1]}" (admission comes before batching)')
        if rank is not None and (highest is None or rank > highest[0]):
            highest = (rank, cid)


def _check_connectors(service: ServiceConfig, connectors: dict[str, ComponentSpec],
                      raw_ids: dict[str, set[str]], err) -> None:
    """A connector is an exporter of one pipeline and a receiver of another (as in the OTel
    Collector): both sides must be used, each in a pipeline of a signal the connector joins."""
    for cid in sorted(raw_ids["connectors"]):
        path = ("connectors", cid)
        for kind in ("receivers", "exporters"):
            if cid in raw_ids[kind]:
                err(path, f'ambiguous id: "{cid}" is both a {kind[:-1]} and a connector; rename one')
        spec = connectors.get(cid)
        if spec is None:
            continue  # its own errors are reported already
        pairs = spec.factory.connects
        sides = {"exporter": [pid for pid, p in service.pipelines.items() if cid in p.exporters],
                 "receiver": [pid for pid, p in service.pipelines.items() if cid in p.receivers]}
        if not sides["exporter"] and not sides["receiver"]:
            continue  # configured but unused: idle, as any component
        for side, other in (("exporter", "receiver"), ("receiver", "exporter")):
            supported = sorted({pair[0] if side == "exporter" else pair[1] for pair in pairs})
            for pid in sides[side]:
                signal = pid.partition("/")[0]
                if signal in SIGNALS and signal not in supported:
                    err(("service", "pipelines", pid, side + "s"),
                        f'connector "{cid}" cannot be an {side} of a {signal} pipeline '
                        f'(it takes {", ".join(supported)} as an {side})')
            if sides[side] and not sides[other]:
                err(path, f'connector "{cid}" is used as {side} in {", ".join(sides[side])} but not as '
                          f'{other} in any pipeline: list it in the {other}s of a '
                          f'{" or ".join(sorted({p[1] if other == "receiver" else p[0] for p in pairs}))} pipeline')
