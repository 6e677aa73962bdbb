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
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

from collector.model import LOGS, SIGNALS, TRACES, Batch  # light: protobuf loads only where items are encoded

if TYPE_CHECKING:
    from collector.pipeline import IntakeSettings
    from collector.telemetry import Telemetry

__all__ = [
    "Component", "Processor", "IntakeProcessor", "Exporter", "Receiver", "Connector", "Consumer", "Consumers",
    "Factory", "ConnectorFactory", "ComponentContext", "Registry", "ALL_SIGNALS", "TRACES_ONLY", "TRACES_AND_LOGS",
    "RetryableError", "PermanentError", "Overloaded", "Unavailable", "Health", "READY", "ID_TYPE_RE", "split_id",
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


class Unavailable(Overloaded):
    """Data cannot be taken now because an exporter it must reach is not ready (its database is
    down, missing or refuses writes): receivers answer ``UNAVAILABLE`` / 503 with Retry-After at
    once instead of holding the request until its deadline.  A kind of :class:`Overloaded`, so
    whatever waits out backpressure (the intake journal's feeder) waits this out too."""


@dataclass(frozen=True)
class Health:
    """Whether a component can do its work now; ``reason`` says why not (one line, for
    ``/healthz`` and the refusal message)."""

    ready: bool
    reason: str = ""
    retry_after: float = 1.0


READY = Health(True)


ALL_SIGNALS: frozenset[str] = frozenset(SIGNALS)
TRACES_ONLY: frozenset[str] = frozenset({TRACES})
TRACES_AND_LOGS: frozenset[str] = frozenset({TRACES, LOGS})


class Component:
    """What every component can be asked: release its resources (flush first, for exporters)."""

    def shutdown(self) -> None:
        """Flush and release resources; the default has nothing to do."""


class Processor(Component):
    """A pipeline stage: ``process`` may drop, enrich or rewrite items (in place is fine).

    Capabilities are declared, not discovered: a processor that keeps data back (tail sampling)
    sets ``holds_data`` and returns what it releases from ``flush``, which the pipeline then calls
    every ``FLUSH_INTERVAL`` and at shutdown.
    """

    holds_data: ClassVar[bool] = False

    def process(self, batch: Batch) -> Batch:
        return batch

    def flush(self, final: bool = False) -> Batch | None:
        """Items held back that are now ready to go on (``final``: everything, we are stopping)."""
        return None


class IntakeProcessor(Processor):
    """A processor that configures the pipeline's intake instead of transforming batches.

    Admission (``memory_limiter``) and batching (``batch``) happen where requests enter the
    pipeline, before any processor runs, because an acknowledgement waits for the export (see
    ``collector/pipeline.py``).  Listing one after a transforming processor would suggest it runs
    there, so ``validate`` requires intake processors first, ordered by their factory's
    ``intake_rank`` (``memory_limiter`` before ``batch``: admission, then grouping).
    """

    def configure(self, intake: "IntakeSettings") -> "IntakeSettings":
        """Return the pipeline's intake settings with this processor's part applied."""
        return intake


class Exporter(Component):
    """Delivers batches; ``export`` raises :class:`RetryableError` / :class:`PermanentError`.

    ``durable``: a successful ``export`` means the data is safe on disk (storage, persistent
    queue), so a receiver may acknowledge on its completion.

    ``prepares``: the exporter splits its work into CPU work without I/O and the write, so the
    pipeline runs ``prepare`` for the next batch (in the process stage, possibly while the same
    exporter writes another batch) and ``export_prepared`` in the export stage.  ``prepare`` may
    return None for a batch it does not prepare (then ``export`` gets the batch);
    ``merge_prepared`` joins prepared parts in order; ``export_prepared`` has the semantics of
    ``export`` and may be called again with the same object after a RetryableError.

    ``reports_health``: the exporter knows when it cannot work (a storage exporter whose
    database is unreachable, missing, read-only or full) and says so in ``health``, cheaply (it
    is read at every admission).  Pipelines then refuse new data with :class:`Unavailable`, and
    ``/healthz`` answers 503 with the reasons; the exporter recovers by itself.
    """

    durable: bool = False
    prepares: ClassVar[bool] = False
    reports_health: ClassVar[bool] = False

    def health(self) -> Health:
        """The current state (no I/O)."""
        return READY

    def export(self, batch: Batch) -> None:
        """Deliver the batch; raise RetryableError / PermanentError.  Must not modify the items."""
        raise NotImplementedError

    def prepare(self, batch: Batch) -> Any:
        return None

    def merge_prepared(self, parts: list) -> Any:
        raise NotImplementedError

    def export_prepared(self, prepared: Any) -> None:
        raise NotImplementedError


class Consumer(Protocol):
    """What a receiver hands one signal's batches to (every pipeline of that signal that lists it).

    ``consume`` returns once every pipeline has handled the batch *durably*; it raises
    :class:`Overloaded` at once when the data cannot be admitted, ``PermanentError`` when an
    exporter refused it for good, and ``TimeoutError`` when ``timeout`` elapsed first (the data
    then stays in the pipeline and will still be written).  ``reserve`` admits the encoded size
    before decoding; ``submit`` hands over without waiting and returns the tickets.
    """

    def reserve(self, nbytes: int) -> Any: ...

    def consume(self, batch: Batch, timeout: float | None = None, reservation: Any = None) -> None: ...

    def submit(self, batch: Batch, reservation: Any = None) -> list: ...


class Consumers(Protocol):
    """The typed interface between a receiver and the pipelines: one :class:`Consumer` per signal.

    ``get(signal)`` is None when no pipeline of that signal lists the receiver; the receiver
    then refuses the data and calls ``unrouted(signal)``, which counts it and tells the user
    (once per signal) what to add to the config.
    """

    def get(self, signal: str) -> Consumer | None: ...

    def unrouted(self, signal: str) -> str: ...


class Receiver(Component):
    """Takes data in and hands it to ``consumers``; ``shutdown`` stops accepting, finishes in-flight requests."""

    def start(self, consumers: Consumers) -> None:
        """Bind and start serving; raise OSError with a clear message when the port is taken."""
        raise NotImplementedError


class Connector(Exporter, Receiver):
    """An exporter of one pipeline and a receiver of another (``connectors:`` in the config).

    The service makes one instance per id, exports the upstream pipelines' batches to it and
    ``start``s it with the downstream pipelines as its consumers (one :class:`Consumer` per
    signal, as a receiver gets); it stops after the upstream pipelines have drained, so what they
    held still reaches the downstream ones.
    """


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
    """How to make one type of component: its config dataclass, a constructor, and the signals
    it supports (declared here, not on the instance, so ``validate`` can check pipelines
    without building anything)."""

    type: str
    config_class: type
    create: Callable[[Any, ComponentContext], Any]
    doc: str = ""
    """One line: what the component is for (the README's component index and its reference page)."""
    example: str = ""
    """YAML of a typical config body, shown on the reference page (a test builds it)."""
    signals: frozenset[str] = TRACES_ONLY
    intake_rank: int | None = None
    """Set for an :class:`IntakeProcessor`: it must be listed before every other processor, and
    before intake processors of a higher rank."""


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
