"""Codecs: round trips, decode errors, zero-copy Arrow, batch decoding with failures."""
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
