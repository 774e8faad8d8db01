"""``import sabot as faust``: every name of Faust's top level is either there,
meaning the same class, or said to be missing in docs/faust-migration.md."""
import re
from pathlib import Path

import pytest

import sabot

faust = pytest.importorskip("faust")

MIGRATION = Path(__file__).resolve().parent.parent / "docs" / "faust-migration.md"


def top_level_rows():
    text = MIGRATION.read_text(encoding="utf-8").split("### The package: `faust`", 1)[1]
    text = text.split("\n### ", 1)[0]
    return {m.group(1): (m.group(2), m.group(3))
            for m in re.finditer(r"^\| `faust\.(\w+)` \| (.*?) \| (.*) \|$", text, re.M)}


@pytest.mark.parametrize("name", sorted(set(faust.__all__)))
def test_each_faust_name_is_exported_or_documented_as_missing(name):
    rows = top_level_rows()
    assert name in rows, f"faust.{name} has no row in docs/faust-migration.md"
    sabot_cell, status = rows[name]
    if hasattr(sabot, name):
        assert not status.startswith("not available"), name
        assert sabot_cell == f"`sabot.{name}`", (name, sabot_cell)
        assert name in sabot.__all__
    else:  # missing, or (faust.Topic) another name to use, said in the row
        assert status.startswith("not available") or (
            sabot_cell.startswith("`sabot.") and sabot_cell != f"`sabot.{name}`"
            and "no separate" in status), (
            f"sabot.{name} does not exist, yet the docs say {sabot_cell} {status!r}")


def test_the_names_are_sabots_own_classes():
    from mode import Service, ServiceT

    from sabot.agents import Agent
    from sabot.codecs import Codec
    from sabot.settings import Settings
    from sabot.tables import GlobalTable, SetGlobalTable, SetTable, Table
    from sabot.tables.window_ranges import HoppingWindow, SlidingWindow, TumblingWindow, Window
    from sabot.types import ChannelT
    assert (sabot.Agent, sabot.Codec, sabot.Settings, sabot.Service, sabot.ServiceT) == (
        Agent, Codec, Settings, Service, ServiceT)
    assert (sabot.Table, sabot.GlobalTable, sabot.SetTable, sabot.SetGlobalTable) == (
        Table, GlobalTable, SetTable, SetGlobalTable)
    assert (sabot.Window, sabot.HoppingWindow, sabot.TumblingWindow, sabot.SlidingWindow) == (
        Window, HoppingWindow, TumblingWindow, SlidingWindow)
    assert sabot.TopicT is ChannelT
    window = sabot.HoppingWindow(10, 5)
    assert window.ranges(12) == HoppingWindow(10, 5).ranges(12)


def test_a_name_sabot_does_not_have_is_an_attribute_error():
    with pytest.raises(AttributeError, match="Monitor"):
        sabot.Monitor  # noqa: B018
