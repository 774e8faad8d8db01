"""Conversion to and from Arrow IPC, both ways and both paths (seed 001, test 1)."""
import pyarrow as pa
import pytest

from sabot.bridge.ipc import FrameDecoder, FrameReader, FrameWriter, convert
from sabot.exceptions import ConversionError

from .conftest import shm_segments


def roundtrip(value, threshold=64 * 1024):
    """Write a frame, cut it into bytes, decode it: what a worker would read."""
    writer = FrameWriter(threshold)
    desc = writer.describe(value)
    data = b"".join(memoryview(b) for b in writer.finish({"v": desc}))
    # Fed in two pieces, as a socket may deliver it.
    decoder = FrameDecoder()
    frames = decoder.feed(data[:7]) + decoder.feed(data[7:])
    (header, body), = frames
    reader = FrameReader(header, body)
    return reader.value(header["v"]), writer, reader


@pytest.mark.parametrize("threshold", [64 * 1024, 0], ids=["inline", "shm"])
def test_record_batch_round_trip_both_paths(threshold):
    batch = pa.RecordBatch.from_pydict({"x": [1, 2, 3], "s": ["a", None, "c"]})
    out, writer, _ = roundtrip(batch, threshold)
    assert out.equals(batch) and out.schema.equals(batch.schema)
    assert bool(writer.segments) == (threshold == 0)


@pytest.mark.parametrize("threshold", [64 * 1024, 0], ids=["inline", "shm"])
def test_table_list_and_json_values_round_trip(threshold):
    table = pa.table({"a": [1.5, 2.5]})
    assert roundtrip(table, threshold)[0].equals(table)
    values = [1, "two", {"three": [3]}, None, 4.5, True]
    assert roundtrip(values, threshold)[0] == values
    assert roundtrip([], threshold)[0] == []
    assert roundtrip({"k": [1, 2]}, threshold)[0] == {"k": [1, 2]}
    assert roundtrip(7, threshold)[0] == 7


def test_large_batch_goes_through_shared_memory_without_a_copy():
    before = shm_segments()
    big = pa.RecordBatch.from_pydict({"x": pa.array(range(1_000_000), pa.int64())})
    out, writer, reader = roundtrip(big)
    assert writer.segments and reader.mapped
    # Zero copy: the decoded column's data lies inside the shared mapping.
    mapping = reader.mapped[0]
    data = out.column(0).buffers()[1]
    assert mapping.address <= data.address < mapping.address + mapping.size
    assert out.equals(big)
    # The reader unlinked the name at once; the pages live on with `out`.
    assert shm_segments() <= before


def test_convert_reports_bytes_and_path():
    small = pa.RecordBatch.from_pydict({"x": [1]})
    out, nbytes, via_shm = convert(small)
    assert out.equals(small) and nbytes > 0 and not via_shm
    out, nbytes, via_shm = convert(small, inline_threshold=0)
    assert via_shm and nbytes > 0


def test_values_that_cannot_cross_raise_conversion_error():
    with pytest.raises(ConversionError, match="cannot cross"):
        FrameWriter().describe(object())
    with pytest.raises(ConversionError, match="list item"):
        FrameWriter().describe([1, {2, 3}])
    reader = FrameReader({"parts": []}, None)
    with pytest.raises(ConversionError):
        reader.value({"k": "batch", "shm": "psm_does_not_exist"})
    with pytest.raises(ConversionError):
        reader.value({"k": "batch", "p": 3})


def test_conversion_error_is_a_bridge_error_and_a_value_error():
    from sabot.exceptions import BridgeError
    assert issubclass(ConversionError, BridgeError)
    assert issubclass(ConversionError, ValueError)
