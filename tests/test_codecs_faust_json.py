"""The ``json`` codec writes what Faust's ``faust.utils.json.dumps`` writes,
outside a Record too: sets, tuples and deques as lists, UUID and Decimal as
text, dates and datetimes in ISO 8601 (``Z`` for UTC), an Enum as its value,
a Counter as a dict. Compared with the faust-streaming package itself."""
import collections
import datetime
import decimal
import enum
import uuid

import pytest

from sabot.codecs import get_codec
from sabot.exceptions import EncodeError

faust_json = pytest.importorskip("faust.utils.json")


class Colour(enum.Enum):
    RED = "red"


UTC = datetime.timezone.utc
VALUES = {
    "set": {3, 1, 2},
    "frozenset": frozenset(["a"]),
    "deque": collections.deque([1, 2]),
    "tuple": (1, "x"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": decimal.Decimal("10.50"),
    "date": datetime.date(2024, 2, 29),
    "naive datetime": datetime.datetime(2024, 2, 29, 12, 30, 1, 5),
    "utc datetime": datetime.datetime(2024, 2, 29, 12, 30, tzinfo=UTC),
    "other zone": datetime.datetime(2024, 2, 29, 12, 30,
                                    tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    "time": datetime.time(23, 59, 1),
    "enum": Colour.RED,
    "counter": collections.Counter("abca"),
    "nested": {"ids": {uuid.UUID(int=1)}, "when": [datetime.date(2020, 1, 1)],
               "amounts": (decimal.Decimal("0.1"),)},
    "unicode": {"naïve": "café"},
}


@pytest.mark.parametrize("name", list(VALUES))
def test_json_codec_writes_what_faust_writes(name):
    value = VALUES[name]
    assert get_codec("json").encode(value) == faust_json.dumps(value).encode("utf-8")


def test_a_value_json_cannot_carry_is_an_encode_error_naming_its_type():
    with pytest.raises(EncodeError, match="'object'"):
        get_codec("json").encode({"x": object()})


def test_bytes_are_written_as_text_not_as_their_repr():
    # The one deliberate difference: Faust writes str(b"..."), "b'...'".
    assert get_codec("json").encode(b"abc") == b'"abc"'
