"""YAML loading the OTel Collector way: line numbers for every key, ``${env:VAR}`` expansion.

Expansion follows confmap: ``${env:VAR}``, ``${env:VAR:-default}``, the short ``${VAR}``, and
``$$`` for a literal ``$``.  When a whole scalar is one reference, the substituted text is parsed as
YAML, so ``${env:PORT}`` can become an int; inside a longer string it stays text.  An unset variable
without a default expands to the empty string, as in the Collector, and is reported so a user sees it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import yaml

from config.schema import ConfigError

__all__ = ["load_yaml", "expand_env"]

_REF = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BAD_REF = re.compile(r"\$\{(?!(?:env:)?[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})[^}]*\}?")


def _expand_string(text: str, env: Mapping[str, str], unset: list[str]) -> Any:
    whole = _REF.fullmatch(text)
    if whole and whole.group(0) != "$$":
        name, default = whole.group(1), whole.group(2)
        if name in env:
            raw = env[name]
        else:
            if default is None:
                unset.append(name)
            raw = default or ""
        try:
            return yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            return raw

    def repl(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is None:
            unset.append(name)
        return default or ""

    return _REF.sub(repl, text)


def expand_env(node: Any, env: Mapping[str, str] | None = None,
               unset: list[str] | None = None) -> Any:
    """Expand references in every string of a loaded YAML tree (keys are left alone)."""
    env = os.environ if env is None else env
    unset = [] if unset is None else unset
    if isinstance(node, str):
        return _expand_string(node, env, unset)
    if isinstance(node, list):
        return [expand_env(v, env, unset) for v in node]
    if isinstance(node, dict):
        return {k: expand_env(v, env, unset) for k, v in node.items()}
    return node


MAX_NODES = 100_000  # values a config may expand to, aliases followed (real configs: a few hundred)


def _line_map(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int], source: str) -> None:
    """Record the line of every key path.  Aliases are followed (a path through an alias has a
    line too), so this is also where a tree that aliases blow up ("billion laughs": 744 bytes of
    nested anchors expanding to 10**9 values) is stopped, before anything walks it again."""
    out.setdefault(path, node.start_mark.line + 1)
    if len(out) > MAX_NODES:
        line = out.get(path[:1], node.start_mark.line + 1)
        raise ConfigError("", f"{source}: the YAML expands to more than {MAX_NODES} values at line {line} "
                              f"(nested anchors and aliases?)")
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), out, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (str(i),), out, source)


class _UniqueKeys:
    """Refuses duplicate keys (silently keeping the last one hides mistakes)."""

    def construct_mapping(self, node, deep=False):  # noqa: D401 - yaml API
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class _UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    """The pure-Python loader: its syntax errors say more than libyaml's (``found character '\\t'``)."""


class _FastUniqueKeyLoader(_UniqueKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """libyaml's parser (15x faster on a large file) for the common case of a valid file."""


def _compose(text: str, source: str, loader_cls) -> tuple[Any, dict[tuple[str, ...], int]]:
    """The constructed document and the line of every key path (aliases bounded, see _line_map)."""
    lines: dict[tuple[str, ...], int] = {}
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _line_map(node, (), lines, source)
        return loader.construct_document(node), lines
    except RecursionError:  # an alias inside its own anchor, or absurd nesting
        raise ConfigError("", f"{source}: the YAML nests too deeply (a recursive alias?)") from None
    finally:
        loader.dispose()


def load_yaml(text: str, source: str = "config") -> tuple[dict[str, Any], dict[tuple[str, ...], int], list[str]]:
    """Parse YAML text; returns (expanded tree, line of every key path, unset env variables).

    Raises :class:`ConfigError` naming the line for syntax errors.
    """
    try:
        try:
            data, lines = _compose(text, source, _FastUniqueKeyLoader)
        except yaml.YAMLError:  # again, for the better message (errors are rare, so is the cost)
            data, lines = _compose(text, source, _UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if mark is not None:
            raise ConfigError("", f"{source}: YAML syntax error at line {mark.line + 1}, column "
                                  f"{mark.column + 1}: {problem}") from None
        raise ConfigError("", f"{source}: YAML syntax error: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{source}: the top level must be a mapping, got {type(data).__name__}")
    unset: list[str] = []
    expanded = expand_env(data, unset=unset)
    return expanded, lines, sorted(set(unset))
