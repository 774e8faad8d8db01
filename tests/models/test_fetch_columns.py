"""The whole-fetch decoder converts column by column: the same records and the
same dead letters as message by message.

``sabot.models.fast_json`` converts each field's column at once (decimal
and date texts in one pass, nulls to defaults, nested records from their
child columns) and builds each record from final values. Each test checks
that the fetch path was the one that ran and that it gives exactly what
``TypedCodec.decode`` gives for each message, failures included.
"""
import datetime
import decimal
from typing import List, Optional, Set, Tuple

import sabot
from sabot.exceptions import DecodeError
from sabot.models.codec import TypedCodec
from sabot.models.fast_json import FetchDecoder
from sabot.models.json_layout import dumps

UTC = datetime.timezone.utc


class ColLine(sabot.Record, namespace="cols.Line", decimals=True):
    sku: str
    price: Optional[decimal.Decimal] = None


class ColOrder(sabot.Record, namespace="cols.Order", isodates=True, decimals=True):
    id: str
    total: decimal.Decimal
    placed: datetime.datetime
    ship: ColLine
    lines: List[ColLine]
    maybe_lines: Optional[List[ColLine]] = None
    paid: Optional[datetime.datetime] = None
    fee: Optional[decimal.Decimal] = decimal.Decimal("1.5")
    note: Optional[str] = "none"
    px: float = 0.0


def order(i, **changes):
    fields = dict(id=f"o-{i}", total=f"{i}.25", placed=f"2024-05-06T07:08:{i % 60:02d}Z",
                  ship={"sku": "ship", "price": None, "__faust": {"ns": "cols.Line"}},
                  lines=[{"sku": f"s{j}", "price": f"{j}.5", "__faust": {"ns": "cols.Line"}}
                         for j in range(i % 3)],
                  maybe_lines=None if i % 2 else [{"sku": "m", "price": None}],
                  paid=None if i % 2 else "2024-01-01T00:00:00+02:00",
                  fee=None if i % 3 else "2.75", note=None if i % 4 else "gift", px=i,
                  __faust={"ns": "cols.Order"})
    fields.update(changes)
    return dumps(fields)


def decode_both(model, payloads, *, vouched=True):
    """The fetch's values and failures, checked against message by message."""
    codec = TypedCodec("json", model)
    assert (FetchDecoder(model).decode(payloads) is not None) is vouched
    values, failures = codec.decode_many(payloads)
    failed = dict(failures)
    good = iter(values)
    for i, payload in enumerate(payloads):
        try:
            want = codec.decode(payload)
        except DecodeError as exc:
            assert i in failed and str(failed[i]) == str(exc)
            continue
        got = next(good)
        assert i not in failed
        assert type(got) is model and got == want and dumps(got) == dumps(want)
    return values, failures


def test_columns_convert_dates_decimals_and_defaults_as_each_message():
    values, failures = decode_both(ColOrder, [order(i) for i in range(12)])
    assert not failures and len(values) == 12
    first, second, third = values[0], values[1], values[3]
    assert first.total == decimal.Decimal("0.25") and type(first.total) is decimal.Decimal
    assert first.placed == datetime.datetime(2024, 5, 6, 7, 8, 0, tzinfo=UTC)
    assert first.paid.utcoffset() == datetime.timedelta(hours=2)
    assert second.paid is None and second.maybe_lines is None
    assert first.maybe_lines == [ColLine("m")]
    assert first.fee == decimal.Decimal("2.75") and second.fee == decimal.Decimal("1.5")
    assert first.note == "gift" and second.note == "none"
    assert type(first.px) is float and third.px == 3.0
    assert first.ship == ColLine("ship") and first.ship.price is None
    assert values[2].lines == [ColLine("s0", decimal.Decimal("0.5")),
                               ColLine("s1", decimal.Decimal("1.5"))]


def test_a_value_that_does_not_convert_is_a_dead_letter_naming_the_field():
    payloads = [order(i) for i in range(6)]
    payloads[1] = order(1, total="not a number")
    payloads[3] = order(3, placed="yesterday")
    payloads[4] = order(4, fee="9" * 2000)
    values, failures = decode_both(ColOrder, payloads)
    assert [i for i, _ in failures] == [1, 3, 4]
    assert "'total'" in str(failures[0][1]) and "'placed'" in str(failures[1][1])
    assert "'fee'" in str(failures[2][1])
    assert [v.id for v in values] == ["o-0", "o-2", "o-5"]


def test_a_nested_value_that_does_not_convert_is_a_dead_letter():
    payloads = [order(i) for i in range(4)]
    payloads[2] = order(2, lines=[{"sku": "x", "price": "cheap"}])
    # A nested record that does not build: the whole fetch goes message by message.
    values, failures = decode_both(ColOrder, payloads, vouched=False)
    assert [i for i, _ in failures] == [2] and "lines" in str(failures[0][1])
    assert len(values) == 3


class Checked(sabot.Record, namespace="cols.Checked", validation=True):
    n: int = sabot.IntegerField(max_value=10)
    line: ColLine
    at: Optional[datetime.datetime] = None


def test_validation_true_in_a_fetch_names_the_field():
    good = dumps({"n": 3, "line": {"sku": "a", "price": "1.5"}, "at": "2024-01-01T00:00:00Z"})
    bad = dumps({"n": 30, "line": {"sku": "a", "price": None}, "at": None})
    values, failures = decode_both(Checked, [good, bad, good])
    assert len(values) == 2 and [i for i, _ in failures] == [1]
    assert "'n'" in str(failures[0][1])
    assert values[0].at == datetime.datetime(2024, 1, 1, tzinfo=UTC)
    assert values[0].line.price == decimal.Decimal("1.5")


def parse_day(text):
    return datetime.datetime.strptime(text, "%d/%m/%Y")


class Custom(sabot.Record, namespace="cols.Custom", isodates=True, date_parser=parse_day,
             coercions={str: str.upper}):
    day: datetime.datetime
    name: str
    lines: Set[ColLine] = set()
    pairs: Tuple[ColLine, ...] = ()


def test_a_class_s_own_date_parser_coercions_and_containers_apply_in_a_fetch():
    payloads = [dumps({"day": "02/03/2024", "name": "ab", "lines": [{"sku": "x"}, {"sku": "x"}],
                       "pairs": [{"sku": "y"}]}),
                dumps({"day": "03/03/2024", "name": "cd"})]
    values, failures = decode_both(Custom, payloads)
    assert not failures
    assert values[0].day == datetime.datetime(2024, 3, 2) and values[0].name == "AB"
    assert values[0].lines == {ColLine("x")} and values[0].pairs == (ColLine("y"),)
    assert values[1].lines == set() and values[1].pairs == ()


class Plain(sabot.Record, namespace="cols.Plain"):
    a: int
    b: str


def test_records_built_from_a_fetch_behave_as_any_record():
    values, _ = decode_both(Plain, [dumps({"a": i, "b": str(i)}) for i in range(3)])
    assert Plain.to_batch(values).to_pylist() == [{"a": i, "b": str(i)} for i in range(3)]
    fetched, _ = decode_both(ColOrder, [order(i) for i in range(4)])
    assert ColOrder.to_batch(fetched).to_pylist() == ColOrder.to_batch(
        [TypedCodec("json", ColOrder).decode(order(i)) for i in range(4)]).to_pylist()
    record = values[1]
    assert record.__dict__ == {"a": 1, "b": "1"} and record.asdict() == {"a": 1, "b": "1"}
    record.a = 5
    assert record == Plain(5, "1") and hash(record) == hash(Plain(5, "1"))
    assert repr(record) == "<Plain: a=5, b='1'>"


def test_a_missing_or_null_required_field_in_a_nested_record_is_a_dead_letter():
    payloads = [order(i) for i in range(5)]
    payloads[1] = order(1, ship={"price": "1"})
    payloads[2] = order(2, lines=[{"sku": "a"}, {"price": "2"}])
    payloads[3] = order(3, ship={"sku": None})
    values, failures = decode_both(ColOrder, payloads, vouched=False)
    assert [i for i, _ in failures] == [1, 2] and "'sku'" in str(failures[0][1])
    assert [v.id for v in values] == ["o-0", "o-3", "o-4"] and values[1].ship.sku is None


class Deep(sabot.Record, namespace="cols.Deep"):
    grid: List[List[ColLine]]


def test_lists_of_lists_of_records():
    payloads = [dumps({"grid": [[{"sku": "a"}], [], [{"sku": "b"}, {"sku": "c"}]]}),
                dumps({"grid": []})]
    values, failures = decode_both(Deep, payloads)
    assert not failures and values[0].grid == [[ColLine("a")], [], [ColLine("b"), ColLine("c")]]
    values, failures = decode_both(Deep, payloads + [dumps({"grid": [[{"price": "1"}]]})],
                                   vouched=False)
    assert [i for i, _ in failures] == [2] and "'sku'" in str(failures[0][1])


def test_build_records_twins_make_the_same_records():
    """sabot/_cython/records.pyx and records_py.py: one API, the same records."""
    import os

    import pytest

    from sabot import _fastpath
    from sabot._cython import records_py
    pure = os.environ.get("SABOT_PURE_PYTHON", "") not in ("", "0", "false", "no")
    try:
        from sabot._cython import records
    except ImportError as exc:
        if pure:
            pytest.skip(f"pure-Python run and the extension is not built: {exc}")
        raise
    expected = records if not pure else records_py
    assert _fastpath.build_records is expected.build_records
    assert records.__all__ == records_py.__all__ == ["build_records"]
    options = Plain._options.__dict__
    names, build = options["_typed_names"], options["_from_typed"]
    assert names == ("a", "b")
    columns = [[1, 2, 3], ["x", "y", "z"]]
    for twin in (records, records_py):
        made = twin.build_records(build, Plain, names, columns)
        assert made == [Plain(1, "x"), Plain(2, "y"), Plain(3, "z")]
        assert all(type(r) is Plain for r in made) and made[0].__dict__ == {"a": 1, "b": "x"}
        assert twin.build_records(build, Plain, names, [[], []]) == []
    # A class whose records are checked as they are made: always through its builder.
    checked = Checked._options.__dict__
    assert checked["_typed_names"] is None
    rows = [[3], [ColLine("a")], [None]]
    for twin in (records, records_py):
        assert twin.build_records(checked["_from_typed"], Checked, None, rows) == [
            Checked(3, ColLine("a"))]
        with pytest.raises(ValueError):
            twin.build_records(checked["_from_typed"], Checked, None, [[30], [ColLine("a")],
                                                                       [None]])


class NoFields(sabot.Record, namespace="cols.NoFields"):
    pass


def test_a_record_without_fields_is_decoded_message_by_message():
    codec = TypedCodec("json", NoFields)
    values, failures = codec.decode_many([b"{}", b'{"__faust":{"ns":"cols.NoFields"}}'])
    assert not failures and values == [NoFields(), NoFields()]
