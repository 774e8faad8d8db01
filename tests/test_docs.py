"""The documentation: the site builds without a warning, the Faust table is honest.

``mkdocs build --strict`` (mkdocs.yml) renders every page of docs/ and the
API reference from the docstrings (mkdocstrings); any warning, a broken link,
a page left out of the nav, a reference that does not resolve, fails it.
docs/faust-migration.md lists Faust's public API one name per row: a name it
calls "same" must exist in Sabot, and every Faust top-level name and
setting must have a row.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import click
import pytest
import yaml

import sabot

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MIGRATION = DOCS / "faust-migration.md"


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
        env={**os.environ, "NO_COLOR": "1"})


def test_the_site_builds_strict_with_the_api_reference(tmp_path: Path) -> None:
    result = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr + result.stdout
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    # The reference was generated from the docstrings, not left as `::: name` text.
    assert ":::" not in api
    for name in ("sabot.app.App", "sabot.streams.Stream", "sabot.agents.rpc"):
        assert f'id="{name}' in api, name
    assert "Faust" in (tmp_path / "site" / "faust-migration" / "index.html").read_text("utf-8")


def test_every_page_of_docs_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for item in node.values():
                yield from pages(item)
    listed = set(pages(config["nav"]))
    present = {p.name for p in DOCS.glob("*.md")}
    assert present - listed == set(), "add these pages to mkdocs.yml's nav"
    assert listed - present == set(), "the nav names pages that do not exist"


def test_the_strict_build_fails_on_a_link_outside_docs(tmp_path: Path) -> None:
    # The checks the real build relies on: the project's validation settings
    # turn a link to ../README.md (outside docs/) into a failure.
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the readme](../README.md).\n", encoding="utf-8")
    config.update(docs_dir=str(docs), nav=[{"Home": "index.md"}], plugins=[])
    config_file = tmp_path / "mkdocs.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = mkdocs_build(config_file, tmp_path / "site")
    assert result.returncode != 0
    assert "README.md" in result.stderr + result.stdout


# -- docs/faust-migration.md -----------------------------------------------------------

Row = Tuple[str, str, str]  # (Faust, Sabot, status), as written


def migration_rows() -> List[Row]:
    rows = []
    text = MIGRATION.read_text(encoding="utf-8")
    for line in text.split("## Faust's API, name by name", 1)[1].splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 3 and not set(cells[0]) <= set("-: ") and cells[0] != "Faust":
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def code_of(cell: str) -> str:
    match = re.match(r"`([^`]+)`", cell)
    return match.group(1) if match else ""


def test_every_status_is_one_of_the_four() -> None:
    rows = migration_rows()
    assert len(rows) > 200
    for faust, sabot_name, status in rows:
        assert re.match(r"(same( \(.+\))?$|same, differs: \S|warned \(no effect\): \S|not available)",
                        status), (faust, status)
        if status.startswith("not available"):
            assert sabot_name in ("", "—"), (faust, sabot_name)
        else:
            assert code_of(sabot_name), f"{faust}: say what Sabot calls it"


def test_the_table_covers_faust_top_level_names_and_settings() -> None:
    import faust
    from faust.types.settings.params import Param
    from faust.types.settings.settings import Settings as FaustSettings
    named = {code_of(faust) for faust, _, _ in migration_rows()}
    missing = [f"faust.{n}" for n in faust.__all__ if f"faust.{n}" not in named]
    assert missing == []
    settings = [n for n, v in vars(FaustSettings).items()
                if isinstance(v, Param) and n != "MY_SETTING"]  # MY_SETTING: Faust's doc example
    assert [n for n in settings if n not in named] == []


def faust_names_in_table() -> set:
    """Every Faust name a row speaks of: ``View.json``, ``text`` -> ``View.text``."""
    named = set()
    for faust, _, _ in migration_rows():
        spans = [re.sub(r"\(.*", "", span) for span in re.findall(r"`([^`]+)`", faust)]
        if not spans:
            continue
        prefix = spans[0].rsplit(".", 1)[0] if "." in spans[0] else ""
        for span in spans:
            named.add(span if "." in span or not prefix else f"{prefix}.{span}")
    # A Faust topic is a channel: a row for either covers both.
    return named | {re.sub(r"^(channel|topic)\.", lambda m: "topic." if m.group(1) == "channel"
                           else "channel.", n) for n in named}


def test_the_table_covers_the_public_names_of_faust_classes() -> None:
    import mode
    from faust.agents import Agent
    from faust.app.base import App
    from faust.channels import Channel
    from faust.events import Event
    from faust.models.record import Record
    from faust.streams import Stream
    from faust.tables.table import Table
    from faust.tables.wrappers import WindowSet, WindowWrapper
    from faust.topics import Topic
    from faust.web.blueprints import Blueprint
    from faust.web.views import View
    service = set(dir(mode.Service))  # every mode.Service has them: said once in the page

    def public(cls: type) -> List[str]:
        names: set = set()
        for klass in cls.__mro__:
            if klass is object or klass.__module__.startswith(
                    ("mode", "typing", "collections", "abc", "faust.types")):
                continue
            names |= {n for n in vars(klass) if not n.startswith("_")}
        return sorted(names - service)
    named = faust_names_in_table()
    missing = [f"{label}.{name}"
               for label, cls in [("app", App), ("agent", Agent), ("stream", Stream),
                                  ("channel", Channel), ("topic", Topic), ("table", Table),
                                  ("windowed", WindowWrapper), ("windowed[k]", WindowSet),
                                  ("Record", Record), ("event", Event), ("View", View),
                                  ("Blueprint", Blueprint)]
               for name in public(cls) if f"{label}.{name}" not in named]
    assert missing == []


def sabot_roots(app: "sabot.App") -> Dict[str, Any]:
    from sabot import web
    from sabot.streams import Stream
    from sabot.tables.windowed import WindowSet
    channel = app.channel()

    @app.agent(channel, name="docs-agent")
    async def agent(stream: Any) -> Any:
        async for value in stream:
            yield value
    windowed = app.Table("docs-windowed", default=int).tumbling(10)
    return {
        "sabot": sabot, "app": app, "agent": agent, "stream": Stream(app.channel()),
        # A Kafka topic (made, never started: no broker is needed) has partitions.
        "channel": channel,
        "topic": sabot.App("docs-kafka", broker="kafka://127.0.0.1:9092").topic("docs-topic"),
        "table": app.Table("docs-table", default=int), "windowed": windowed,
        "windowed[k]": WindowSet, "event": sabot.EventT, "Record": sabot.Record,
        "web": web, "View": web.View, "Blueprint": web.Blueprint,
    }


def resolve(roots: Dict[str, Any], dotted: str) -> Any:
    """``app.agent``, ``sabot.web.View``, ``windowed[k].current``: the object, or AttributeError."""
    import importlib
    import types
    for root in sorted(roots, key=len, reverse=True):
        if dotted == root or dotted.startswith(root + "."):
            obj = roots[root]
            rest = dotted[len(root) + 1:]
            break
    else:
        raise AssertionError(f"{dotted}: not a name the test knows how to look up")
    for part in rest.split(".") if rest else []:
        if not hasattr(obj, part) and isinstance(obj, types.ModuleType):
            try:  # a submodule not imported yet
                obj = importlib.import_module(f"{obj.__name__}.{part}")
                continue
            except ImportError:
                pass
        obj = getattr(obj, part)
    return obj


async def test_every_name_called_same_exists_in_sabot() -> None:
    from sabot.cli import cli
    from sabot.settings import DEFAULTS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = sabot.App("docs-check")
        roots = sabot_roots(app)
    checked = 0
    for faust, cell, status in migration_rows():
        if status.startswith(("not available", "warned")):
            continue
        name = code_of(cell)
        if name.startswith("sabot ") and re.fullmatch(r"sabot [a-z][a-z-]*", name):
            assert name.split()[1] in cli.list_commands(click.Context(cli)), faust
        elif name.startswith("conf."):
            assert name[5:] in DEFAULTS, faust
        elif re.fullmatch(r"[\w\[\]]+(\.\w+)*", name):
            try:
                resolve(roots, name)
            except AttributeError as exc:
                raise AssertionError(f"{faust}: the table says {status!r}, but {exc}") from None
        else:
            continue  # a usage (``@app.agent(..., help=)``), not a name
        checked += 1
    assert checked > 150


def warned_settings() -> List[str]:
    from sabot.faust_settings import UNSUPPORTED
    return [code_of(faust) for faust, _, status in migration_rows()
            if status.startswith("warned") and code_of(faust) in UNSUPPORTED]


def test_settings_called_warned_are_the_ones_sabot_warns_about() -> None:
    from sabot.faust_settings import UNSUPPORTED
    status_of = {code_of(faust): status for faust, _, status in migration_rows()}
    for name in UNSUPPORTED:
        if name in status_of:  # a Faust setting (UNSUPPORTED also has older names)
            assert status_of[name].startswith("warned"), name


@pytest.mark.parametrize("name", warned_settings())
def test_a_warned_setting_is_accepted_with_a_warning_naming_it(name: str) -> None:
    from sabot.exceptions import SabotCompatibilityWarning
    with pytest.warns(SabotCompatibilityWarning, match=name):
        app = sabot.App("docs-settings", **{name: 1})
    assert app.conf.get(name) == 1


async def test_the_ported_agent_runs_as_the_page_shows() -> None:
    text = MIGRATION.read_text(encoding="utf-8")
    section = text.split("## A ported agent", 1)[1]
    faust_code, sabot_code, batches_code = re.findall(r"```python\n(.*?)```", section, re.S)[:3]
    compile(faust_code, "faust-migration.md (Faust)", "exec")
    namespace: Dict[str, Any] = {"__name__": "ported_agent"}
    exec(compile(sabot_code, "faust-migration.md (Sabot)", "exec"), namespace)
    exec(compile(batches_code, "faust-migration.md (batches)", "exec"), namespace)
    Order = namespace["Order"]
    async with namespace["score"].test_context() as agent:
        assert await agent.put(Order(id=7, amount=20_000.0)) == [{"order": 7}]
        assert await agent.put(Order(id=8, amount=5.0)) == []
    # Typed as the agent's topic is, so that batches() gives RecordBatches.
    typed = namespace["app"].channel(value_type=Order)
    async with namespace["score_batches"].test_context(channel=typed) as agent:
        assert await agent.put(Order(id=7, amount=20_000.0)) == [{"order": 7}]
        assert await agent.put(Order(id=8, amount=5.0)) == []
