"""The README's example runs as written (through test_context, no broker)."""
import os
import re

import pyarrow as pa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_readme_example():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    code = re.search(r"## Example\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


async def test_readme_example_agents_work(capsys):
    ns = load_readme_example()
    async with ns["score"].test_context() as ctx:
        assert await ctx.put({"id": 7, "amount": 20_000}) == [{"order": 7}]
        assert await ctx.put({"id": 8, "amount": 5}) == []
    async with ns["mean_price"].test_context() as ctx:
        batch = pa.record_batch({"sym": ["a", "b"], "px": [1.0, 3.0]}, schema=ns["prices"].schema)
        await ctx.put_batch(batch)
    assert "2.0" in capsys.readouterr().out


async def test_a_failing_on_done_callback_is_logged_not_raised_to_the_reader(caplog):
    import sabot
    from sabot._fastpath import Batch

    def broken(batch):
        raise RuntimeError("ack failed")
    ch = sabot.App("x").channel()
    it = ch.subscribe().values()
    await ch.publish(Batch([1], on_done=broken))
    await ch.send(value=2)
    with caplog.at_level("ERROR", logger="sabot.channels"):
        assert await it.__anext__() == 1
        assert await it.__anext__() == 2  # moving past the batch ran on_done
    assert "ack failed" in caplog.text
