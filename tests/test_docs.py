"""Docs as a contract: generated reference pages match the code, every key has a doc, links resolve."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from collector import docgen
from collector.component import Factory
from config.schema import ByteSize, Duration, build, describe, setting

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_generated_pages_are_current_and_every_key_has_a_doc():
    problems = docgen.problems()
    assert not problems, ("the docs do not match the code:\n  " + "\n  ".join(problems)
                          + f"\nfix the code (setting(doc=...), FACTORY doc=/example=), then run: {docgen.COMMAND}")


def test_readme_is_a_short_contract_that_reaches_every_key_in_two_clicks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for comp in docgen.components():
        link = f"docs/reference/{comp.kind}/{comp.factory.type}.md"
        assert f"]({link})" in readme, f"README component index lacks {link}; run {docgen.COMMAND}"
        page = (ROOT / link).read_text(encoding="utf-8")
        for row in describe(comp.factory.config_class):
            assert f"| `{row.path}` |" in page, f"{link} lacks key {row.path}; run {docgen.COMMAND}"


def test_readme_command_table_lists_every_command():
    from collector.cli import build_parser

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [name for name in sub.choices if f"`genai-collector {name}" not in readme
               and not re.search(rf"`genai-collector \w+` / `{name}\b", readme)]
    assert not missing, f"README's command table lacks: {missing}"


def test_ci_runs_the_readme_commands():
    """.ci/run installs and tests the way the README's quick start says; neither may drift alone."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for step in ('pip install -e ".[test]"', "python -m pytest -q"):
        assert step in readme, f"README's test command lacks {step!r}"
        assert re.search(re.escape(step).replace("install", r"install(?: -q)?"), ci), f".ci/run lacks {step!r}"


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", _without_code(page.read_text(encoding="utf-8")), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    broken = []
    for target in LINK.findall(_without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path) if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in _anchors(file)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to files or headings that do not exist: {broken}"


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md"))
               if p.name != "index.md" and f"]({p.name})" not in index]
    assert not missing, f"docs/index.md does not link to {missing}: add a row for each"


def test_code_points_only_to_files_that_exist():
    """Comments and docstrings once sent readers to a DESIGN.md that is not in the repository."""
    mention = re.compile(r"(?<![\w/])(docs/[\w./-]+\.md|[A-Z][A-Z_]+\.md)")
    missing = sorted({f"{p.relative_to(ROOT)}: {m}"
                      for d in ("collector", "config", "processors", "exporters", "bench", "tests")
                      for p in (ROOT / d).rglob("*.py") if p != Path(__file__).resolve()
                      for m in mention.findall(p.read_text(encoding="utf-8")) if not (ROOT / m).exists()})
    assert not missing, f"code refers to files that are not in the repository: {missing}"


# --- the generator is generic: any config dataclass, any registry kind ---------------------------

@dataclass
class _Inner:
    name: str = setting(doc="inner name")
    weight: float = setting(0.5, min=0, max=1, doc="inner weight")


@dataclass
class _Demo:
    mode: Literal["fast", "safe"] = setting("safe", doc="how to run")
    wait: Duration = setting(0.2, min=0.001, doc="how long to wait")
    size: ByteSize = setting(16 << 20, doc="how much to keep")
    inner: _Inner | None = setting(None, null_enables=True, doc="an optional section")
    items: list[_Inner] = setting(default_factory=list, doc="a list of sections")
    named: dict[str, _Inner] = setting(default_factory=dict, doc="sections by name")
    tags: dict[str, Literal["a", "b"]] = setting(default_factory=dict, doc="choices by key")
    undocumented: int = 3


def test_describe_flattens_nested_sections_with_types_defaults_and_ranges():
    rows = {r.path: r for r in describe(_Demo)}
    assert list(rows) == ["mode", "wait", "size", "inner", "inner.name", "inner.weight", "items",
                          "items[].name", "items[].weight", "named", "named.<name>.name",
                          "named.<name>.weight", "tags", "undocumented"]
    assert (rows["mode"].type, rows["mode"].default, rows["mode"].allowed) == ("string", '"safe"', "one of fast, safe")
    assert (rows["wait"].type, rows["wait"].default, rows["wait"].allowed) == ("duration", "200ms", ">= 1ms")
    assert (rows["size"].type, rows["size"].default) == ("size", "16MiB")
    assert (rows["inner"].default, rows["inner.name"].default) == ("unset", "required")
    assert rows["inner.weight"].allowed == "0 to 1"
    assert rows["tags"].allowed == "one of a, b"
    assert rows["undocumented"].doc == ""


def test_null_enables_turns_a_bare_key_into_a_section_with_defaults():
    assert build(_Demo, {})[0].inner is None  # absent: off
    _, errors = build(_Demo, {"inner": None})  # bare key: on, with defaults (here name is required)
    assert [str(e) for e in errors] == ["inner::name: required"]
    cfg, errors = build(_Demo, {"inner": {"name": "x"}})
    assert not errors and (cfg.inner.name, cfg.inner.weight) == ("x", 0.5)


def test_a_new_kind_and_an_undocumented_key_are_reported(monkeypatch):
    from collector.component import Registry
    import config.service

    factory = Factory("demo", _Demo, lambda cfg, ctx: None, doc="a demo connector",
                      example="mode: fast\nbogus: 1\n")
    module = type(re)("tests_demo_connector")
    module.FACTORY = factory
    module.__doc__ = "``demo``: what a connector's page is made of."
    monkeypatch.setitem(__import__("sys").modules, "tests_demo_connector", module)
    real = config.service.registries
    monkeypatch.setattr(config.service, "registries",
                        lambda: {**real(), "connectors": Registry("connector", {"demo": "tests_demo_connector"})})
    comps = docgen.components()
    demo = next(c for c in comps if c.kind == "connectors")
    page = docgen.render_page(demo)
    assert "# `demo` connector" in page and "| `named.<name>.weight` | number | required |" not in page
    assert "| `items[].weight` | number | `0.5` | 0 to 1 | inner weight |" in page
    assert "what a connector's page is made of" in page
    problems = docgen.problems()
    assert any("connectors::demo" in p and "key undocumented has no setting(doc=...)" in p for p in problems)
    assert any("connectors::demo" in p and "example is invalid" in p and "bogus" in p for p in problems)
    assert any(p.startswith("docs/reference/connectors/demo.md: missing") for p in problems)
    assert any(p.startswith("README.md: out of date") for p in problems)
