"""Schemas: a value or RecordBatch that does not fit is a SchemaError naming the
field, before anything is sent; one that fits passes as it is (no copy).
"""
import pyarrow as pa
import pytest

import sabot
from sabot import SchemaError
from tests.helpers import SCHEMA, drain


@pytest.fixture
def app():
    return sabot.App("test-schema")


async def test_schema_errors_name_field_and_type(app):
    schema = pa.schema([("sym", pa.string()), ("px", pa.float64())])
    ch = app.channel(schema=schema)
    with pytest.raises(SchemaError) as err:
        await ch.send(value={"sym": "A", "px": "high"})
    assert err.value.field == "px" and "double" in str(err.value)
    with pytest.raises(SchemaError, match="'sym'"):
        await ch.send(value={"px": 1.0, "sym": 7})
    with pytest.raises(SchemaError, match="'extra'"):
        await ch.send(value={"sym": "A", "px": 1.0, "extra": 1})
    with pytest.raises(SchemaError):
        await ch.send(value=[1, 2])
    other = pa.record_batch({"sym": ["A"], "px": pa.array([1], pa.int64())})
    with pytest.raises(SchemaError, match="px"):
        await ch.send_batch(other)
    with pytest.raises(SchemaError):
        await ch.send_batch([{"sym": "A", "px": None}, {"sym": 1, "px": 2.0}])


async def test_schema_error_names_field_expected_type_and_value(app):
    ch = app.channel(schema=SCHEMA)
    with pytest.raises(SchemaError) as info:
        await ch.send(value={"sym": "a", "px": "12.5"})
    err = info.value
    assert isinstance(err, TypeError)
    assert err.field == "px"
    assert err.expected == pa.float64()
    assert err.got == "12.5"
    assert "px" in str(err) and "double" in str(err)


@pytest.mark.parametrize("value, field", [
    ({"px": 1.0}, "sym"),                               # missing
    ({"sym": None, "px": 1.0}, "sym"),                  # None for a field
    ({"sym": "a", "px": 1.0, "qty": 3}, "qty"),         # not in the schema
    ({"sym": 5, "px": 1.0}, "sym"),                     # wrong type
    ({"sym": "a", "px": True}, "px"),                   # bool is not a number
])
async def test_schema_error_field_for_each_kind_of_mismatch(app, value, field):
    schema = pa.schema([pa.field("sym", pa.string(), nullable=False), ("px", pa.float64())])
    ch = app.channel(schema=schema)
    with pytest.raises(SchemaError) as info:
        await ch.send(value=value)
    assert info.value.field == field
    assert repr(field) in str(info.value)


async def test_schema_error_for_a_value_that_is_not_a_dict(app):
    ch = app.channel(schema=SCHEMA)
    for bad in ([("sym", "a")], "sym=a", None, 3):
        with pytest.raises(SchemaError) as info:
            await ch.send(value=bad)
        assert "sym" in str(info.value) and "px" in str(info.value)


async def test_record_batch_with_another_schema_is_rejected_naming_the_field(app):
    ch = app.channel(schema=SCHEMA)
    it = ch.__aiter__()
    wrong_type = pa.record_batch([pa.array(["a"]), pa.array([1], pa.int64())],
                                 names=["sym", "px"])
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(wrong_type)
    assert info.value.field == "px"
    assert info.value.expected == pa.float64() and info.value.got == pa.int64()
    missing = pa.record_batch([pa.array(["a"])], names=["sym"])
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(missing)
    assert info.value.field == "px"
    extra = pa.record_batch([pa.array(["a"]), pa.array([1.0]), pa.array([1])],
                            names=["sym", "px", "qty"])
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(extra)
    assert info.value.field == "qty"
    with pytest.raises(SchemaError):
        await ch.send_batch(pa.Table.from_batches([wrong_type]))
    assert it.poll("nothing") == "nothing"     # nothing got through


async def test_a_bad_row_in_a_list_rejects_the_whole_list(app):
    ch = app.channel(schema=SCHEMA)
    it = ch.__aiter__()
    rows = [{"sym": "a", "px": 1.0}, {"sym": "b", "px": "2"}, {"sym": "c", "px": 3.0}]
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(rows)
    assert info.value.field == "px"
    await ch.flush()
    assert it.poll("nothing") == "nothing"
    await ch.send_batch([rows[0], rows[2]])
    assert await drain(it, 2) == [rows[0], rows[2]]


async def test_a_rejected_send_does_not_spoil_the_rows_gathered_before_it(app):
    ch = app.channel(schema=SCHEMA, linger=60)
    it = ch.__aiter__()
    await ch.send(value={"sym": "a", "px": 1.0})
    with pytest.raises(SchemaError):
        await ch.send(value={"sym": "b", "px": "bad"})
    await ch.send(value={"sym": "c", "px": 3.0})
    await ch.flush()
    assert await drain(it, 2) == [{"sym": "a", "px": 1.0}, {"sym": "c", "px": 3.0}]


# BUG 3 (both): an int that is out of range for the field's integer type (or
# negative for an unsigned one) passes the per-row check at send(); the
# conversion fails later, at flush, with a SchemaError that names no field,
# raised to whoever flushes (a later sender, close(), or only a log line from
# the linger task) -- and every good row gathered with it is dropped.
async def test_out_of_range_int_is_rejected_at_send_naming_the_field(app):
    ch = app.channel(schema=pa.schema([("x", pa.int8())]), linger=60)
    it = ch.__aiter__()
    await ch.send(value={"x": 5})
    with pytest.raises(SchemaError) as info:     # was: no error here
        await ch.send(value={"x": 1000})
    assert info.value.field == "x"
    await ch.flush()
    assert it.poll("nothing") == {"x": 5}        # the good row is still there


async def test_out_of_range_int_does_not_lose_the_good_rows(app):
    ch = app.channel(schema=pa.schema([("x", pa.uint8())]), linger=60)
    it = ch.__aiter__()
    await ch.send(value={"x": 5})
    try:
        await ch.send(value={"x": -1})
    except SchemaError:
        pass
    try:
        await ch.flush()                          # was: SchemaError, field=None
    except SchemaError:
        pass
    assert it.poll("nothing") == {"x": 5}         # was: "nothing" (row lost)


# BUG 15: a nullability-only mismatch named no field. Now a batch whose
# nullable column holds no nulls is accepted (re-labelled, no copy), and one
# with nulls in a non-nullable field is rejected naming the field.
async def test_nullability_mismatch_is_accepted_without_nulls_and_named_with_them(app):
    schema = pa.schema([pa.field("sym", pa.string(), nullable=False), ("px", pa.float64())])
    ch = app.channel(schema=schema)
    batches = ch.stream().batches()
    rb = pa.record_batch([pa.array(["a"]), pa.array([1.0])], names=["sym", "px"])
    await ch.send_batch(rb)
    got = await batches.__anext__()
    assert got.schema.equals(schema) and got.column(0).to_pylist() == ["a"]
    with_null = pa.record_batch([pa.array([None], pa.string()), pa.array([1.0])], names=["sym", "px"])
    with pytest.raises(SchemaError) as info:
        await ch.send_batch(with_null)
    assert info.value.field == "sym"


async def test_record_batch_reaches_every_subscriber_as_the_same_object(app):
    ch = app.channel(schema=SCHEMA)
    streams = [ch.stream() for _ in range(3)]
    iters = [s.batches() for s in streams]
    rb = pa.RecordBatch.from_pylist([{"sym": "a", "px": 1.0}] * 4, schema=SCHEMA)
    await ch.send_batch(rb)
    got = [await drain(it, 1) for it in iters]
    assert all(g[0] is rb for g in got)
