"""Fuzz the record decoder (house rule: every decoder is fuzzed).

Deterministic: random and mutated JSON documents, from valid Faust-layout
messages of three record classes (flat with validation, nested with dates,
decimals, optional and list fields, loose without validation), go through
``TypedCodec.decode`` one by one and ``TypedCodec.decode_many`` a fetch at a
time (the whole-fetch Arrow parser with its per-message fallback). Nothing
but ``DecodeError`` may escape; every value that decodes is a record of the
class; the fetch decoder gives exactly what the per-message decoder gives,
message for message (same records, same failures); and the decoded records
turn into a RecordBatch or name the rows that do not fit, without raising.

Environment: ``SABOT_FUZZ_CASES`` (default 3000), ``SABOT_FUZZ_SEED``.
"""
import datetime
import decimal
import json
import os
import random
from typing import List, Optional

import pytest

import sabot
from sabot.exceptions import DecodeError
from sabot.models.arrow import split_batch
from sabot.models.codec import TypedCodec
from sabot.models.json_layout import dumps

SEED = int(os.environ.get("SABOT_FUZZ_SEED", "20261202"))
CASES = int(os.environ.get("SABOT_FUZZ_CASES", "3000"))
FETCH = 25


class FuzzLine(sabot.Record, namespace="fuzz.Line"):
    sku: str
    qty: int = 1


class FuzzOrder(sabot.Record, namespace="fuzz.Order", isodates=True, decimals=True):
    id: str
    total: decimal.Decimal
    placed: datetime.datetime
    ship: FuzzLine
    lines: List[FuzzLine] = []
    note: Optional[str] = None
    ok: bool = False


class FuzzStrict(sabot.Record, namespace="fuzz.Strict", validation=True):
    n: int = sabot.IntegerField(min_value=0, max_value=1000)
    s: str = sabot.StringField(max_length=20)
    px: float = 0.0


class FuzzLoose(sabot.Record, namespace="fuzz.Loose"):
    a: int
    b: str
    c: Optional[float] = None


def seeds(rng):
    placed = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    yield FuzzOrder, FuzzOrder("o", decimal.Decimal("1.5"), placed, FuzzLine("x"),
                               [FuzzLine("a", 2)], note="n", ok=True).dumps(serializer="json")
    yield FuzzStrict, FuzzStrict(n=5, s="abc", px=1.5).dumps(serializer="json")
    yield FuzzLoose, FuzzLoose(1, "b", 2.5).dumps(serializer="json")


ODD_VALUES = [None, True, False, 0, -1, 1.5, 1e308, -1e308, 10 ** 30, "", "x", "1.5",
              "NaN", "Infinity", "2024-01-01T00:00:00Z", "not a date", [], [1, "a"], {},
              {"sku": 5}, {"__faust": {"ns": "os.system"}}, "\u0000", "\ud800x", "9" * 2000,
              [[[[]]]], {"a": {"b": {"c": None}}}]
ODD_KEYS = ["__faust", "__class__", "asdict", "_private", "extra", "", "n", "s", "id",
            "\u00e9", "__init__", "self", "__strict__", "data"]


def mutate_doc(rng, doc):
    """A structural mutation of a decoded JSON document."""
    doc = json.loads(json.dumps(doc))
    kind = rng.randrange(6)
    keys = list(doc) if isinstance(doc, dict) else []
    if kind == 0 and keys:
        doc.pop(rng.choice(keys))
    elif kind == 1 and keys:
        doc[rng.choice(keys)] = rng.choice(ODD_VALUES)
    elif kind == 2:
        doc[rng.choice(ODD_KEYS)] = rng.choice(ODD_VALUES)
    elif kind == 3:
        doc["__faust"] = rng.choice([{"ns": "fuzz.Strict"}, {"ns": "fuzz.Loose"}, {"ns": 5},
                                     {"ns": None}, "fuzz.Order", [], {"nope": 1}])
    elif kind == 4 and keys:
        inner = doc.get("ship") if isinstance(doc.get("ship"), dict) else doc
        if isinstance(inner, dict) and inner:
            inner[rng.choice(list(inner))] = rng.choice(ODD_VALUES)
    else:
        return rng.choice(ODD_VALUES)
    return doc


def mutate_bytes(rng, data):
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0 and data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        del data[rng.randrange(len(data) + 1):]
    elif kind == 2:
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.choice([b"\n", b"\r", b"}{", b"\x00", b",", b'"', b"\\", b"\xff",
                                  b"}\n{", b" ", b"\xef\xbb\xbf"])
    elif kind == 3:
        data = data * rng.randrange(2, 4)
    else:
        data = bytearray(rng.randbytes(rng.randrange(0, 40)))
    return bytes(data)


def cases(rng, n):
    pool = list(seeds(rng))
    for _ in range(n):
        model, seed = rng.choice(pool)
        r = rng.random()
        if r < 0.3:
            payload = seed  # valid messages keep the fetch path busy
        elif r < 0.75:
            payload = json.dumps(mutate_doc(rng, json.loads(seed)), separators=(",", ":")).encode()
        else:
            payload = mutate_bytes(rng, seed)
        yield model, payload


def decode_one(codec, payload):
    try:
        value = codec.decode(payload)
    except DecodeError as exc:
        return exc
    assert isinstance(value, codec.type), (payload, value)
    return value


@pytest.mark.parametrize("model", [FuzzOrder, FuzzStrict, FuzzLoose], ids=lambda m: m.__name__)
def test_fuzz_record_decoding(model):
    rng = random.Random(f"{SEED}-{model.__name__}")
    codec = TypedCodec("json", model)
    fetch: List[bytes] = []
    fetched = 0
    for _, payload in cases(rng, CASES):
        one = decode_one(codec, payload)  # raises anything but DecodeError: the test fails
        fetch.append(payload)
        if len(fetch) < FETCH and rng.random() > 0.02:
            continue
        # A fetch of mostly valid messages sometimes, so the Arrow parser vouches.
        if rng.random() < 0.5:
            fetch = [p for p in fetch if not isinstance(decode_one(codec, p), DecodeError)] \
                or fetch
        values, failures = codec.decode_many(fetch)
        expected = [decode_one(codec, p) for p in fetch]
        failed = {i for i, _ in failures}
        assert len(values) + len(failures) == len(fetch)
        assert all(isinstance(exc, DecodeError) for _, exc in failures)
        good = iter(values)
        for i, want in enumerate(expected):
            if isinstance(want, DecodeError):
                assert i in failed, (fetch[i], "decoded in a fetch, refused alone")
            else:
                assert i not in failed, (fetch[i], "refused in a fetch, decoded alone")
                got = next(good)
                # Compared as written (NaN is not equal to itself).
                assert type(got) is type(want) and dumps(got) == dumps(want), fetch[i]
        batch, bad = split_batch(model, values)  # never raises
        assert batch.num_rows + len(bad) == len(values)
        fetched += len(fetch)
        fetch = []
        del one
    assert fetched > CASES // 2


def test_fuzz_scalar_types():
    rng = random.Random(SEED)
    for typ, serializer in ((int, "raw"), (float, "raw"), (decimal.Decimal, "raw"),
                            (str, "raw"), (bytes, "raw"), (int, "json"), (str, "json")):
        codec = TypedCodec(serializer, typ)
        for _ in range(300):
            payload = rng.choice([rng.randbytes(rng.randrange(12)),
                                  str(rng.choice(ODD_VALUES)).encode("utf-8", "replace"),
                                  json.dumps(rng.choice(ODD_VALUES)).encode()])
            try:
                value = codec.decode(payload)
            except DecodeError:
                continue
            assert isinstance(value, typ)


def test_deeply_nested_documents_are_dead_letters_in_a_fetch_too():
    codec = TypedCodec("json", FuzzLoose)
    for body in (b"[" * 200_000 + b"]" * 200_000, b'{"x":' * 200_000 + b"1" + b"}" * 200_000):
        deep = b'{"a":1,"b":"b","c":' + body + b"}"
        values, failures = codec.decode_many([deep, b'{"a":2,"b":"x"}'])
        assert values == [FuzzLoose(2, "x")]
        assert [i for i, _ in failures] == [0] and "recursion" in str(failures[0][1])


def test_the_fetch_parser_vouches_for_a_fetch_of_valid_messages():
    """The whole-fetch path is what runs (the fuzz above compares it with the
    per-message path; this makes sure it is not always falling back)."""
    from sabot.models.fast_json import FetchDecoder
    for model, seed in seeds(random.Random(SEED)):
        decoder = FetchDecoder(model)
        assert decoder.schema is not None
        decoded = decoder.decode([seed] * 10)
        assert decoded is not None
        values, failed = decoded
        assert len(values) == 10 and failed == []
        assert all(type(v) is model for v in values)
        assert decoder.decode([seed, seed.replace(b"{", b"{\n", 1)]) is None  # a line break
