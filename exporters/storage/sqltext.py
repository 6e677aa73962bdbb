"""SQL fragments with their bound parameters, for the code that talks to the store through the
DBAPI driver directly: the query CLI, and the full-text search the storage shares with it.

Why not SQLAlchemy Core, which the write path uses: importing it costs 0.35-0.6 s on a 2-vCPU
machine, more than half of the query CLI's 1 s budget for an answer, and read queries need no
more than text and parameters.  Values never enter the text: every one is a ``?`` placeholder,
rendered for the driver's parameter style by :meth:`Sql.render` (``?`` for sqlite3, ``%s`` for
psycopg, which also gets every literal ``%`` doubled).  So fragments never hold a literal ``?``
of their own (the constructor counts them against the parameters).
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson

__all__ = ["Sql", "join", "all_of", "any_of", "in_list", "json_column"]


def json_column(value: Any) -> Any:
    """A JSON column's value as read through the driver: text from SQLite (decoded here), already
    Python objects from Postgres JSONB; text that is not JSON is returned as it is."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


class Sql:
    """A piece of SQL and its parameters, in placeholder order."""

    __slots__ = ("text", "params")

    def __init__(self, text: str, *params: Any) -> None:
        if text.count("?") != len(params):
            raise ValueError(f"{text.count('?')} placeholders, {len(params)} parameters: {text!r}")
        self.text = text
        self.params = params

    @classmethod
    def compose(cls, template: str, *parts: "Sql | str") -> "Sql":
        """``template`` with each ``{}`` replaced by a part (a fragment, or SQL text of ours)."""
        pieces = [p if isinstance(p, Sql) else Sql(p) for p in parts]
        out = cls.__new__(cls)
        out.text = template.format(*(p.text for p in pieces))
        out.params = tuple(v for p in pieces for v in p.params)
        return out

    def render(self, dialect: str) -> str:
        """The text in the driver's parameter style (psycopg reads ``%`` only when given
        parameters)."""
        if dialect == "postgresql" and self.params:
            return self.text.replace("%", "%%").replace("?", "%s")
        return self.text

    def __repr__(self) -> str:
        return f"Sql({self.text!r}, {self.params!r})"


def join(parts: Iterable[Sql | str], separator: str) -> Sql:
    pieces = [p if isinstance(p, Sql) else Sql(p) for p in parts]
    return Sql.compose(separator.join("{}" for _ in pieces), *pieces)


def all_of(parts: Iterable[Sql | str]) -> Sql:
    """``((a) AND (b) ...)``, safe inside any other expression; TRUE when there are none."""
    return _connected(parts, " AND ", Sql("1 = 1"))


def any_of(parts: Iterable[Sql | str]) -> Sql:
    """``((a) OR (b) ...)``, safe inside any other expression; FALSE when there are none."""
    return _connected(parts, " OR ", Sql("1 = 0"))


def _connected(parts: Iterable[Sql | str], operator: str, empty: Sql) -> Sql:
    pieces = list(parts)
    if not pieces:
        return empty
    return Sql.compose("({})", join((Sql.compose("({})", p) for p in pieces), operator))


def in_list(expression: Sql | str, values: Iterable[Any]) -> Sql:
    """``expression IN (?, ?, ...)``, one placeholder per value."""
    values = tuple(values)
    return Sql.compose("{} IN {}", expression, Sql(f"({', '.join('?' for _ in values)})", *values))
