"""Codecs: round trips, decode errors, zero-copy Arrow, batch decoding with failures,
hostile Arrow messages and tombstones."""
import struct

import pyarrow as pa
import pytest

from sabot.codecs import (ArrowCodec, Codec, decode_many, get_codec,
                          register_codec)
from sabot.exceptions import ConfigurationError, DecodeError, EncodeError

SCHEMA = pa.schema([("id", pa.int64()), ("px", pa.float64()), ("sym", pa.string())])


def arrow_batch(n=5):
    return pa.RecordBatch.from_pydict(
        {"id": list(range(n)), "px": [i / 2 for i in range(n)], "sym": [f"s{i}" for i in range(n)]},
        schema=SCHEMA)


@pytest.mark.parametrize("name,value", [
    ("raw", b"\x00\xffbytes"),
    ("json", {"a": [1, 2.5, None, "x"], "b": {"c": True}}),
    ("json", "plain string"),
])
def test_round_trip(name, value):
    codec = get_codec(name)
    data = codec.encode(value)
    assert isinstance(data, bytes)
    assert codec.decode(data) == value


def test_raw_accepts_str_and_rejects_objects():
    assert get_codec("raw").encode("é") == "é".encode()
    with pytest.raises(EncodeError):
        get_codec("raw").encode(12)


def test_json_encode_error():
    with pytest.raises(EncodeError):
        get_codec("json").encode(object())


def test_arrow_round_trip_equal_batch():
    batch = arrow_batch()
    out = get_codec("arrow").decode(get_codec("arrow").encode(batch))
    assert isinstance(out, pa.RecordBatch)
    assert out.equals(batch)


def test_arrow_decode_does_not_copy():
    data = get_codec("arrow").encode(arrow_batch(1000))
    message = pa.py_buffer(data)
    lo, hi = message.address, message.address + message.size
    out = get_codec("arrow").decode(data)
    for column in out.columns:
        for buf in column.buffers():
            if buf is not None and buf.size:
                assert lo <= buf.address < hi, "column buffer lies outside the message bytes"


@pytest.mark.parametrize("name,data", [
    ("json", b"{not json"),
    ("json", b"\xff\xfe"),
    ("arrow", b"garbage"),
    ("arrow", ArrowCodec().encode(arrow_batch(100))[:-40]),  # truncated IPC
])
def test_decode_errors_are_decode_error(name, data):
    with pytest.raises(DecodeError) as info:
        get_codec(name).decode(data)
    assert info.value.codec == name
    assert info.value.payload == data


def test_registry():
    class Upper(Codec):
        name = "upper"

        def encode(self, value):
            return value.upper().encode()

        def decode(self, data):
            return data.decode().lower()

    register_codec("upper", Upper())
    assert get_codec("upper").decode(get_codec("upper").encode("abc")) == "abc"
    codec = Upper()
    assert get_codec(codec) is codec
    with pytest.raises(ConfigurationError, match="'nope'"):
        get_codec("nope")


def test_decode_many_splits_good_from_bad():
    payloads = [b'{"a":1}', b"{bad", b'{"a":3}', b"\xff"]
    values, failures = decode_many("json", payloads)
    assert values == [{"a": 1}, {"a": 3}]
    assert [i for i, _ in failures] == [1, 3]
    assert all(isinstance(e, DecodeError) for _, e in failures)


def test_decode_many_raw_is_the_payload_list():
    payloads = [b"a", b"b"]
    values, failures = decode_many("raw", payloads)
    assert values == payloads and failures == []


def test_decode_many_json_with_schema_builds_one_batch():
    json = get_codec("json")
    rows = [{"id": 1, "px": 1.5, "sym": "a"}, {"id": "x", "px": 1.0, "sym": "b"},
            b"oops", {"id": 3, "px": 2.0, "sym": "c"}, {"id": 2**70, "px": 1.0, "sym": "d"}]
    payloads = [r if isinstance(r, bytes) else json.encode(r) for r in rows]
    batch, failures = decode_many(json, payloads, schema=SCHEMA)
    assert isinstance(batch, pa.RecordBatch)
    assert batch.schema.equals(SCHEMA)
    assert batch.to_pylist() == [rows[0], rows[3]]
    assert [i for i, _ in failures] == [1, 2, 4]


def test_decode_many_arrow_keeps_one_batch_per_message():
    codec = get_codec("arrow")
    other = pa.RecordBatch.from_pydict({"z": [1]})
    payloads = [codec.encode(arrow_batch(3)), b"junk", codec.encode(other), codec.encode(arrow_batch(2))]
    values, failures = decode_many(codec, payloads, schema=SCHEMA)
    assert [len(v) for v in values] == [3, 2]
    assert [i for i, _ in failures] == [1, 2]


def test_user_codec_raising_other_errors_is_wrapped():
    class Broken(Codec):
        name = "broken"

        def decode(self, data):
            raise KeyError(data)

    values, failures = decode_many(Broken(), [b"x"])
    assert values == [] and isinstance(failures[0][1], DecodeError)


# -- hostile Arrow messages (issue 10): fully validated, or a DecodeError --------

def crafted_string_offsets(n=4):
    """A valid message of one string column whose second offset is then set
    far out of range: the cheap ``validate()`` passes it, reading it crashes."""
    batch = pa.record_batch({"s": pa.array(["aa", "bb", "cc", "dd"][:n])})
    data = bytearray(ArrowCodec().encode(batch))
    offsets = struct.pack(f"<{n + 1}i", *range(0, 2 * n + 1, 2))
    at = data.find(offsets)
    assert at > 0
    data[at + 4:at + 8] = struct.pack("<i", 1 << 30)
    return bytes(data)


def test_crafted_string_offsets_are_a_decode_error_not_a_crash():
    data = crafted_string_offsets()
    # What decode did before: the cheap check lets it through.
    pa.ipc.open_stream(data).read_next_batch().validate()
    with pytest.raises(DecodeError, match="invalid Arrow IPC stream") as info:
        get_codec("arrow").decode(data)
    assert info.value.codec == "arrow" and info.value.payload == data
    good = ArrowCodec().encode(pa.record_batch({"s": pa.array(["ok"])}))
    values, failures = decode_many("arrow", [data, good])
    assert [v.to_pylist() for v in values] == [[{"s": "ok"}]]
    assert [i for i, _ in failures] == [0]


def test_every_batch_of_a_stream_is_validated_before_they_are_combined():
    good = pa.record_batch({"s": pa.array(["x", "y"])})
    bad = pa.ipc.open_stream(crafted_string_offsets()).read_next_batch()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, good.schema) as writer:
        writer.write_batch(good)
        writer.write_batch(bad)  # written as it is: the writer copies the buffers
    with pytest.raises(DecodeError):
        get_codec("arrow").decode(sink.getvalue().to_pybytes())


def ipc(batch):
    return ArrowCodec().encode(batch)


def test_invalid_utf8_and_dictionary_index_out_of_range_are_decode_errors():
    raw = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(struct.pack("<2i", 0, 2)),
                                                 pa.py_buffer(b"\xff\xfe")])
    with pytest.raises(DecodeError, match="UTF8"):
        get_codec("arrow").decode(ipc(pa.record_batch([raw], names=["s"])))
    indices = pa.array([0, 7], pa.int32())
    dictionary = pa.DictionaryArray.from_buffers(
        pa.dictionary(pa.int32(), pa.string()), 2, indices.buffers(), pa.array(["a", "b"]))
    with pytest.raises(DecodeError):
        get_codec("arrow").decode(ipc(pa.record_batch([dictionary], names=["d"])))


def test_nested_field_name_that_is_not_utf8_is_a_decode_error():
    batch = pa.record_batch({"st": pa.array([{"abcd": 1}])})
    data = bytearray(ipc(batch))
    data[data.find(b"abcd")] = 0xFF
    with pytest.raises(DecodeError, match="not UTF-8"):
        get_codec("arrow").decode(bytes(data))


def test_empty_list_whose_offset_points_past_its_child_is_a_decode_error():
    # validate(full=True) checks no offset of an empty array, yet flatten()
    # of this one aborts the process.
    empty = pa.Array.from_buffers(pa.list_(pa.string()), 0,
                                  [None, pa.py_buffer(struct.pack("<i", 20))],
                                  children=[pa.array([], pa.string())])
    empty.validate(full=True)
    with pytest.raises(DecodeError, match="offset 20"):
        get_codec("arrow").decode(ipc(pa.record_batch([empty], names=["l"])))
    fine = pa.record_batch({"l": pa.array([], pa.list_(pa.string()))})
    assert get_codec("arrow").decode(ipc(fine)).num_rows == 0


@pytest.mark.skipif(not hasattr(pa, "string_view"), reason="pyarrow without view types")
def test_null_string_view_with_a_negative_length_is_a_decode_error():
    # Not checked by validate(full=True); casting it to string segfaults.
    views = pa.array(["short", None, "a string longer than twelve bytes"], pa.string_view())
    buffers = views.buffers()
    words = bytearray(bytes(buffers[1]))
    struct.pack_into("<i", words, 16, -1000)
    bad = pa.Array.from_buffers(pa.string_view(), 3, [buffers[0], pa.py_buffer(bytes(words)),
                                                      buffers[2]], null_count=1)
    bad.validate(full=True)
    with pytest.raises(DecodeError, match="negative length"):
        get_codec("arrow").decode(ipc(pa.record_batch([bad], names=["v"])))
    out = get_codec("arrow").decode(ipc(pa.record_batch([views], names=["v"])))
    assert out.column(0).to_pylist() == views.to_pylist()


def test_billions_of_rows_in_a_few_bytes_are_a_decode_error():
    # Valid Arrow (no column has buffers), but every per-row step would blow up.
    nothing = pa.RecordBatch.from_arrays([pa.nulls(10 ** 9)], names=["n"])
    with pytest.raises(DecodeError, match="rows in a message"):
        get_codec("arrow").decode(ipc(nothing))
    dense = pa.record_batch({"b": pa.array([True] * 1000)})  # one bit a row is fine
    assert get_codec("arrow").decode(ipc(dense)).num_rows == 1000


def test_arrow_decode_raises_only_decode_error():
    data = ipc(arrow_batch(20))
    for cut in range(0, len(data), 7):
        try:
            get_codec("arrow").decode(data[:cut])
        except DecodeError:
            pass
    for bad in (b"", "text", 12, bytearray(b"\xff" * 64)):
        with pytest.raises(DecodeError):
            get_codec("arrow").decode(bad)


def test_json_nested_too_deep_is_a_decode_error():
    with pytest.raises(DecodeError, match="invalid JSON"):
        get_codec("json").decode(b"[" * 200_000)


# -- tombstones (a null value), as in Faust: None, or a dead letter ---------------

def test_tombstone_is_none_for_value_codecs():
    assert get_codec("raw").decode(None) is None
    assert get_codec("json").decode(None) is None
    assert decode_many("raw", [b"a", None]) == ([b"a", None], [])
    values, failures = decode_many("json", [b"1", None, b"{bad"])
    assert values == [1, None] and [i for i, _ in failures] == [2]


def test_tombstone_is_none_for_user_codecs_without_calling_them():
    class Strict(Codec):
        name = "strict"

        def decode(self, data):
            return data.decode("ascii")  # would raise AttributeError on None

    assert decode_many(Strict(), [b"a", None, b"c"]) == (["a", None, "c"], [])


def test_tombstone_is_a_failure_for_arrow_and_for_a_schema():
    with pytest.raises(DecodeError, match=r"null value \(tombstone\)"):
        get_codec("arrow").decode(None)
    values, failures = decode_many("arrow", [None, ipc(arrow_batch(2))], schema=SCHEMA)
    assert [len(v) for v in values] == [2]
    assert [i for i, _ in failures] == [0]
    assert str(failures[0][1]).startswith("null value (tombstone)")
    row = get_codec("json").encode({"id": 1, "px": 1.5, "sym": "a"})
    batch, failures = decode_many("json", [row, None], schema=SCHEMA)
    assert batch.num_rows == 1 and [i for i, _ in failures] == [1]
    assert "null value (tombstone)" in str(failures[0][1])
    assert "schema" in str(failures[0][1])
