"""Regressions of the bridge / process agent / pipeline bugs the contract suite found."""

import pyarrow as pa

from sabot.bridge import DataBridge, ProcessAgentRunner, ProcessBridge
from sabot.bridge.ipc import convert
from sabot.nodes import NodeRegistry

from . import contract_agents as ca


def small_dictionary_batch():
    return pa.RecordBatch.from_pydict({"d": pa.array(["a", "b", "a"]).dictionary_encode()})


def nested_dictionary_batch():
    inner = pa.StructArray.from_arrays([pa.array(["x", "y"]).dictionary_encode()], ["s"])
    return pa.RecordBatch.from_arrays([inner], names=["st"])


# -- 1: a small dictionary-encoded batch crosses on the inline path ------------

def test_small_dictionary_batches_convert_inline():
    for batch in (small_dictionary_batch(), nested_dictionary_batch()):
        out, _, shm = convert(batch)
        assert not shm
        assert out.equals(batch)


async def test_small_dictionary_batch_through_a_process_agent_and_bridge():
    async with ProcessAgentRunner(ca.echo_batches) as runner:
        (out,) = await runner.process(small_dictionary_batch())
        assert out.equals(small_dictionary_batch())
    reg = NodeRegistry()
    reg.register("echo", native=ca.Echo)
    async with ProcessBridge(reg) as bridge:
        out = await bridge.execute_node("e", "echo", small_dictionary_batch(), {})
        assert out.equals(small_dictionary_batch())


async def test_small_dictionary_batch_through_databridge():
    bridge = DataBridge(source="native", target="process")
    await bridge.put(small_dictionary_batch())
    assert (await bridge.get()).equals(small_dictionary_batch())
