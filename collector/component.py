"""Component protocols, factories and the registry that maps ``type`` names to them.

A component module defines a config dataclass, a class, and one module-level ``FACTORY``.  The
registries (``collector/receivers/__init__.py``, ``processors/__init__.py``,
``exporters/__init__.py``) map a type name to the module path, one line each; modules are imported
only when a config uses them, so a heavy dependency (presidio, psycopg) costs nothing until used.
Keep heavy imports inside constructors for the same reason: ``validate`` imports every module a
config names.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:  # the query CLI imports registries too: it must not pay for protobuf
    from collector.model import SpanBatch
    from collector.telemetry import Telemetry

__all__ = [
    "Processor", "Exporter", "Receiver", "Connector", "Consumer", "Factory", "ConnectorFactory", "ComponentContext", "Registry",
    "RetryableError", "PermanentError", "Overloaded", "ID_TYPE_RE", "split_id",
]

ID_TYPE_RE = re.compile(r"^[a-zA-Z][0-9a-zA-Z_]{0,62}$")


class RetryableError(Exception):
    """An export failed but may succeed later (database down, upstream unavailable).

    ``retry_after`` (seconds) is a hint from the other side, e.g. gRPC RetryInfo.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """An export failed and retrying the same data cannot help (data refused as invalid)."""


class Overloaded(Exception):
    """The pipeline cannot take more data now; receivers answer with backpressure.

    ``retry_after`` is the delay (seconds) to suggest to the client.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@runtime_checkable
class Processor(Protocol):
    def process(self, batch: SpanBatch) -> SpanBatch:
        """Return the batch to pass on; may drop, enrich or rewrite spans (in place is fine)."""

    def shutdown(self) -> None:
        ...


@runtime_checkable
class Exporter(Protocol):
    durable: bool
    """True when a successful ``export`` means the spans are safe on disk (storage, persistent
    queue): only then may a receiver acknowledge on its completion."""

    def export(self, batch: SpanBatch) -> None:
        """Deliver the batch; raise RetryableError / PermanentError.  Must not modify spans."""

    def shutdown(self) -> None:
        """Flush and release resources."""

    # Optional, all three or none (see ``ExporterHandle`` in collector/pipeline.py): an exporter
    # whose export is CPU work then I/O can split it, and the pipeline runs ``prepare`` for the
    # next batch while ``export_prepared`` writes the previous one:
    #   prepare(batch) -> P, merge_prepared(parts: list[P]) -> P, export_prepared(prepared: P)


class Consumer(Protocol):
    """What a receiver hands decoded spans to (the pipelines it feeds).

    ``consume`` returns once every pipeline has handled the batch *durably*; it raises
    :class:`Overloaded` at once when the data cannot be admitted, ``PermanentError`` when an
    exporter refused it for good, and ``TimeoutError`` when ``timeout`` elapsed first (the data
    then stays in the pipeline and will still be written).
    """

    def consume(self, batch: SpanBatch, timeout: float | None = None) -> None:
        ...


@runtime_checkable
class Receiver(Protocol):
    def start(self, consumer: Consumer) -> None:
        """Bind and start serving; raise OSError with a clear message when the port is taken."""

    def shutdown(self) -> None:
        """Stop accepting new data and finish requests in flight."""


@runtime_checkable
class Connector(Protocol):
    """An exporter of one pipeline and a receiver of another (``connectors:`` in the config).

    The service makes one instance per id, exports the upstream pipelines' batches to it and
    ``start``s it with the downstream pipelines as its consumer; it stops after the upstream
    pipelines have drained, so what they held still reaches the downstream ones.
    """

    durable: bool

    def export(self, batch) -> None:
        ...

    def start(self, consumer: Consumer) -> None:
        ...

    def shutdown(self) -> None:
        ...


@dataclass
class ComponentContext:
    """What a factory gets besides its config."""

    id: str
    kind: str  # receiver | processor | exporter | connector | extension
    telemetry: "Telemetry"
    logger: logging.Logger
    pipeline: str | None = None  # for processors and exporters: the pipeline (exporters may be shared)
    config: Any = None  # for extensions: the whole CollectorConfig (the ui extension reads the store
    #                     its storage exporter writes)

    def counter(self, name: str, help: str = "", **labels: str):
        """``ctx.counter("dropped_spans")`` -> ``otelcol_processor_dropped_spans{processor="<id>"}``."""
        return self.telemetry.counter(f"otelcol_{self.kind}_{name}", help, **{self.kind: self.id, **labels})

    def gauge(self, name: str, help: str = "", fn=None, **labels: str):
        return self.telemetry.gauge(f"otelcol_{self.kind}_{name}", help, fn, **{self.kind: self.id, **labels})


@dataclass(frozen=True)
class Factory:
    """How to make one type of component: its config dataclass and a constructor."""

    type: str
    config_class: type
    create: Callable[[Any, ComponentContext], Any]
    doc: str = ""
    """One line: what the component is for (the README's component index and its reference page)."""
    example: str = ""
    """YAML of a typical config body, shown on the reference page (a test builds it)."""


@dataclass(frozen=True)
class ConnectorFactory(Factory):
    """A connector's factory: ``connects`` lists the (exporter-side signal, receiver-side signal)
    pairs it joins, e.g. ``(("traces", "metrics"),)``; ``validate`` checks pipelines against it."""

    connects: tuple[tuple[str, str], ...] = ()


def split_id(component_id: str) -> tuple[str, str]:
    """``"redaction/strict"`` -> ``("redaction", "strict")``; ``"otlp"`` -> ``("otlp", "")``."""
    type_name, _, name = component_id.partition("/")
    return type_name, name


class Registry:
    """Type name -> module path; the module's ``FACTORY`` is loaded on first use."""

    def __init__(self, kind: str, modules: dict[str, str]) -> None:
        self.kind = kind
        self.modules = dict(modules)
        self._loaded: dict[str, Factory] = {}

    @property
    def types(self) -> list[str]:
        return sorted(self.modules)

    def get(self, type_name: str) -> Factory:
        factory = self._loaded.get(type_name)
        if factory is None:
            module_path = self.modules[type_name]  # KeyError for unknown types: callers check
            factory = importlib.import_module(module_path).FACTORY
            if factory.type != type_name:
                raise RuntimeError(f"{module_path}.FACTORY registers {factory.type!r}, not {type_name!r}")
            self._loaded[type_name] = factory
        return factory

    def __contains__(self, type_name: str) -> bool:
        return type_name in self.modules
