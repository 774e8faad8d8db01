"""Records in an agent with ``executor="process"``: they cross the bridge in
Faust's JSON layout, tagged with their namespace, and are rebuilt as their
class in the worker process (which imports this module, so defines them),
both ways. The agent functions and classes live at module level so that
the child can import them."""
import datetime
import decimal
from typing import List

import pytest

import sabot
from sabot.bridge.ipc import tag, untag
from sabot.exceptions import ConversionError
from tests.helpers import until

UTC = datetime.timezone.utc


class Part(sabot.Record, namespace="proc.Part"):
    name: str
    qty: int = 1


class Build(sabot.Record, namespace="proc.Build", isodates=True, decimals=True):
    id: str
    at: datetime.datetime
    cost: decimal.Decimal
    parts: List[Part] = []


async def describe(stream):
    async for build in stream:
        yield {"type": type(build).__name__, "parts": [type(p).__name__ for p in build.parts],
               "at": build.at.isoformat(), "cost": str(build.cost)}
        yield build.derive(id=build.id + "!")


@pytest.mark.parametrize("executor", ["native", "process"])
async def test_records_cross_to_a_process_agent_and_back(executor):
    app = sabot.App(f"proc-records-{executor}")
    channel = app.channel(value_type=Build)
    out = []
    app.agent(channel, executor=executor, sink=[out.append], name=f"describe-{executor}")(
        describe)
    build = Build("b1", datetime.datetime(2024, 1, 2, tzinfo=UTC), decimal.Decimal("9.50"),
                  [Part("wheel", 4)])
    async with app:
        await channel.send(value=build)
        await until(lambda: len(out) == 2, timeout=30)
    assert out[0] == {"type": "Build", "parts": ["Part"], "at": "2024-01-02T00:00:00+00:00",
                      "cost": "9.50"}
    assert out[1] == build.derive(id="b1!") and type(out[1].parts[0]) is Part


def test_tagging_round_trip_and_an_unknown_class():
    value = {"build": Build("b", datetime.datetime(2024, 1, 2, tzinfo=UTC),
                            decimal.Decimal("1"), [Part("p")]), "n": 1}
    assert untag(tag(value)) == value
    with pytest.raises(ConversionError, match="defined in the worker"):
        untag({"__sabot_record__": ["nowhere.Thing", "{}"]})
