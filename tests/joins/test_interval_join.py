"""``stream.join_within(other, within=, on=)``: the interval join of two streams.

The joined pairs equal a brute-force reference (every left row against every
right row: equal keys, ``|t_left - t_right| <= within``) over out-of-order
input with random interleaving of the two sides; the left join adds each
left row that met nothing. Late rows go to the dead-letter channel with the
reason; a buffered batch is acknowledged only once its rows left the buffer.
"""
import asyncio
import datetime
import random

import pyarrow as pa
import pytest

import sabot
from sabot._fastpath import Batch
from sabot.exceptions import ConfigurationError, SchemaError
from sabot.joins.interval import LEFT, RIGHT, IntervalJoin
from tests.helpers import running, unique, until

pytestmark = pytest.mark.usefixtures("quiet_sabot_logs")

WITHIN = 2.0
GRACE = 5.0


def side_rows(n, name, seed, keys=8, span=200.0, disorder=3.0):
    """Rows ``{k, t, <name>}`` in arrival order: out of order by less than ``disorder`` s."""
    rng = random.Random(seed)
    rows = [{"k": rng.randrange(keys), "t": round(rng.uniform(0, span), 3), name: i}
            for i in range(n)]
    rows.sort(key=lambda r: r["t"] + rng.uniform(0, disorder))
    return rows


def brute_force(left, right, how="inner", within=WITHIN):
    pairs = [(l["l"], r["r"]) for l in left for r in right
             if l["k"] == r["k"] and abs(l["t"] - r["t"]) <= within]
    if how == "left":
        met = {p[0] for p in pairs}
        pairs += [(l["l"], None) for l in left if l["l"] not in met]
    return sorted(pairs, key=lambda p: (p[0], -1 if p[1] is None else p[1]))


def interval_app(**options):
    app = sabot.App(unique("interval"), agent_restart_backoff=0.01)
    left = app.channel(name="orders")
    right = app.channel(name="payments")
    # Made now, so it holds what is sent to payments from now on (a channel
    # given to join_within is subscribed when the agent asks for the join).
    payments = right.stream()
    out = []

    @app.agent(left, name="match")
    async def match(stream):
        async for batch in stream.join_within(payments, **options):
            out.append(batch)

    return app, left, right, match, out


async def send_interleaved(left, right, lrows, rrows, seed, size=(5, 40)):
    rng = random.Random(seed)
    li = ri = 0
    while li < len(lrows) or ri < len(rrows):
        n = rng.randrange(*size)
        if ri >= len(rrows) or (li < len(lrows) and rng.random() < 0.5):
            await left.send_batch(pa.RecordBatch.from_pylist(lrows[li:li + n]))
            li += n
        else:
            await right.send_batch(pa.RecordBatch.from_pylist(rrows[ri:ri + n]))
            ri += n


@pytest.mark.parametrize("how", ["inner", "left"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_interval_join_equals_the_brute_force_reference(how, seed):
    app, left, right, match, out = interval_app(
        within=WITHIN, on="k", time="t", grace=GRACE, how=how, prefix="p_")
    lrows = side_rows(600, "l", seed)
    rrows = side_rows(500, "r", seed + 100)
    async with running(app):
        await send_interleaved(left, right, lrows, rrows, seed)
        await left.close()
        await right.close()
        expected = brute_force(lrows, rrows, how)
        await until(lambda: sum(b.num_rows for b in out) >= len(expected),
                    what=lambda: f"{sum(b.num_rows for b in out)} of {len(expected)} rows")
    got = pa.Table.from_batches(out).to_pylist()
    assert list(got[0]) == ["k", "t", "l", "p_t", "p_r"]
    pairs = sorted(((row["l"], row["p_r"]) for row in got),
                   key=lambda p: (p[0], -1 if p[1] is None else p[1]))
    assert len(expected) > 500
    assert pairs == expected
    for row in got:  # every pair is within the interval, on equal keys
        if row["p_r"] is not None:
            assert abs(row["t"] - row["p_t"]) <= WITHIN


def test_the_state_machine_alone_equals_the_reference_and_empties_its_buffers():
    lrows = side_rows(400, "l", 5)
    rrows = side_rows(400, "r", 6)
    join = IntervalJoin(within=WITHIN, on="k", time="t", grace=GRACE, prefix="p_")
    rng = random.Random(9)
    out, li, ri, peak = [], 0, 0, 0
    while li < len(lrows) or ri < len(rrows):
        if ri >= len(rrows) or (li < len(lrows) and rng.random() < 0.5):
            side, chunk, li = LEFT, lrows[li:li + 10], li + 10
        else:
            side, chunk, ri = RIGHT, rrows[ri:ri + 10], ri + 10
        step = join.add(side, object(), join.read(side, pa.RecordBatch.from_pylist(chunk)))
        assert step.rejects == []
        if step.output is not None:
            out += step.output.to_pylist()
        peak = max(peak, join.buffered_rows)
    assert peak < 200  # the watermarks keep the buffers to the interval, not the input
    for side in (LEFT, RIGHT):
        join.end(side)
    assert join.buffered_rows == 0
    assert sorted((r["l"], r["p_r"]) for r in out) == brute_force(lrows, rrows)


async def test_dict_values_message_keys_and_message_timestamps():
    app, left, right, match, out = interval_app(within=datetime.timedelta(seconds=1))
    async with running(app):
        for side, key, value, ts in [(left, "a", {"order": 1}, 100.0),
                                     (right, "a", {"paid": 10}, 100.5),
                                     (right, "b", {"paid": 11}, 100.5),
                                     (right, "a", {"paid": 12}, 103.0),
                                     (left, "a", {"order": 2}, 102.5)]:
            await side.publish(Batch([value], keys=[key], timestamps=[ts]))
        await until(lambda: sum(b.num_rows for b in out) >= 2, what="two pairs")
    assert pa.Table.from_batches(out).to_pylist() == [{"order": 1, "paid": 10},
                                                      {"order": 2, "paid": 12}]


async def test_late_rows_go_to_the_dead_letter_channel_with_the_reason():
    app, left, right, match, out = interval_app(within=1.0, on="k", time="t", grace=2.0,
                                                prefix="r_")
    dead = left.dead_letter_channel().stream()
    async with running(app):
        await left.send_batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 50.0}]))
        await left.send_batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 47.5},    # late
                                                          {"k": 1, "t": 48.5}]))  # in grace
        letter = await dead.events().__anext__()
        await right.send_batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 48.0}]))
        await until(lambda: out, what="the pair")
    assert letter.value.to_pylist() == [{"k": 1, "t": 47.5}]
    reason = letter.headers["sabot-error"].decode()
    assert "late: event time 47.5 is behind the left watermark 48.0" in reason
    assert out[0].to_pylist() == [{"k": 1, "t": 48.5, "r_t": 48.0}]
    assert match.crash_count == 0


async def test_a_buffered_batch_is_acknowledged_only_when_its_rows_left_the_buffer():
    app = sabot.App(unique("interval"))
    left, right = app.channel(), app.channel()
    done = []
    stream = left.stream()
    joined = stream.join_within(right, within=1.0, on="k", time="t", prefix="r_").__aiter__()
    await left.publish(Batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 10.0}]),
                             on_done=lambda b: done.append("left@10")))
    await right.publish(Batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 10.5}]),
                              on_done=lambda b: done.append("right@10.5")))
    first = await asyncio.wait_for(joined.__anext__(), 5)
    assert first.to_pylist() == [{"k": 1, "t": 10.0, "r_t": 10.5}]
    assert stream.sources()[:2] and not done
    # The right side moves to 20: the left row (10 + 1 < 20) can meet nothing more.
    await right.publish(Batch(pa.RecordBatch.from_pylist([{"k": 2, "t": 20.0}])))
    task = asyncio.ensure_future(joined.__anext__())
    await until(lambda: "left@10" in done, what="the left batch acknowledged")
    assert "right@10.5" not in done  # the left watermark is still 10
    await left.publish(Batch(pa.RecordBatch.from_pylist([{"k": 3, "t": 30.0}])))
    await until(lambda: "right@10.5" in done, what="the right batch acknowledged")
    task.cancel()


async def test_a_missing_key_column_on_the_other_side_dead_letters_its_rows():
    app, left, right, match, out = interval_app(within=1.0, on="k", time="t", prefix="r_")
    dead = right.dead_letter_channel().stream()
    async with running(app):
        await right.send_batch(pa.RecordBatch.from_pylist([{"key": 1, "t": 1.0}]))
        letter = await dead.events().__anext__()
    assert "join key column 'k' is missing" in letter.headers["sabot-error"].decode()


async def test_a_missing_key_column_on_the_agents_side_dead_letters_its_rows_too():
    app, left, right, match, out = interval_app(within=1.0, on="k", time="t", prefix="r_")
    dead = left.dead_letter_channel().stream()
    async with running(app):
        await left.send_batch(pa.RecordBatch.from_pylist([{"key": 1, "t": 1.0},
                                                          {"key": 2, "t": 1.5}]))
        letters = [await dead.events().__anext__() for _ in range(2)]
        # The join goes on, its state intact.
        await left.send_batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 3.0}]))
        await right.send_batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 3.5}]))
        await until(lambda: out, what="the pair")
    for letter in letters:
        assert letter.headers["sabot-error"].decode().startswith(
            "SchemaError: join key column 'k' is missing")
    assert match.crash_count == 0


def test_a_column_on_both_sides_asks_for_a_prefix():
    join = IntervalJoin(within=1.0, on="k", time="t")
    join.add(LEFT, "a", join.read(LEFT, pa.RecordBatch.from_pylist([{"k": 1, "t": 1.0}])))
    with pytest.raises(SchemaError, match="column 't' is on both sides; give prefix="):
        join.add(RIGHT, "b", join.read(RIGHT, pa.RecordBatch.from_pylist([{"k": 1, "t": 1.0}])))


def test_bad_arguments_are_refused_at_once():
    app = sabot.App(unique("interval"))
    stream, other = app.channel().stream(), app.channel()
    with pytest.raises(ConfigurationError, match="within= must be"):
        stream.join_within(other, within=-1)
    with pytest.raises(ConfigurationError, match="within= must be"):
        stream.join_within(other, within="5s")
    with pytest.raises(ConfigurationError, match="how= must be one of inner, left"):
        stream.join_within(other, within=1, how="outer")
    with pytest.raises(ConfigurationError, match="joins a stream or a channel"):
        stream.join_within([1, 2], within=1)


def test_keys_and_times_named_differently_on_each_side_and_late_rows_counted():
    join = IntervalJoin(within=1.0, on=("order_id", "order"), time=("placed", "paid_at"),
                        grace=0.0)
    step = join.add(LEFT, "l1", join.read(LEFT, pa.RecordBatch.from_pylist(
        [{"order_id": 1, "placed": 10.0}, {"order_id": 2, "placed": 20.0}])))
    assert step.buffered and step.output is None
    step = join.add(RIGHT, "r1", join.read(RIGHT, pa.RecordBatch.from_pylist(
        [{"order": 1, "paid_at": 10.5}, {"order": 2, "paid_at": 25.0}])))
    assert step.output.to_pylist() == [{"order_id": 1, "placed": 10.0, "order": 1,
                                        "paid_at": 10.5}]
    assert step.sources == ["l1", "r1"]
    # The right watermark (25) is past both left rows' t + 1: their batch leaves the buffer.
    assert step.expired == ["l1"]
    step = join.add(RIGHT, "r2", join.read(RIGHT, pa.RecordBatch.from_pylist(
        [{"order": 3, "paid_at": 24.0}])))
    assert join.late == 1 and step.rejects[0][1].startswith("late: event time 24.0")
    assert not step.buffered


def test_a_left_join_emits_lonely_left_rows_when_they_leave_the_buffer():
    join = IntervalJoin(within=1.0, on="k", time="t", how="left", prefix="r_")
    join.add(RIGHT, "r0", join.read(RIGHT, pa.RecordBatch.from_pylist([{"k": 9, "t": 0.0}])))
    join.add(LEFT, "l1", join.read(LEFT, pa.RecordBatch.from_pylist(
        [{"k": 1, "t": 10.0}, {"k": 2, "t": 10.0}])))
    step = join.add(RIGHT, "r1", join.read(RIGHT, pa.RecordBatch.from_pylist(
        [{"k": 1, "t": 10.5}])))
    assert step.output.to_pylist() == [{"k": 1, "t": 10.0, "r_t": 10.5}]
    step = join.add(RIGHT, "r2", join.read(RIGHT, pa.RecordBatch.from_pylist(
        [{"k": 5, "t": 30.0}])))
    assert step.output.to_pylist() == [{"k": 2, "t": 10.0, "r_t": None}]
    assert step.expired == ["l1"] and step.sources == ["l1"]
    assert join.unmatched == 1 and join.pairs == 1


async def test_an_agent_that_restarts_builds_a_new_join_and_the_old_one_lets_go():
    app = sabot.App(unique("interval"), agent_restart_backoff=0.01)
    left, right = app.channel(), app.channel()
    payments = right.stream()
    out, crashes = [], []

    @app.agent(left, on_error="skip")
    async def match(stream):
        async for batch in stream.join_within(payments, within=1.0, on="k", time="t",
                                              prefix="r_"):
            if not crashes:
                crashes.append(batch)
                raise RuntimeError("the agent fails on its first joined batch")
            out.append(batch)

    def rb(rows):
        return pa.RecordBatch.from_pylist(rows)

    async with running(app):
        first = Batch(rb([{"k": 1, "t": 1.0}]))
        await left.publish(first)
        await right.send_batch(rb([{"k": 1, "t": 1.2}]))
        await until(lambda: match.crash_count == 1, what="the crash")
        await left.send_batch(rb([{"k": 2, "t": 5.0}]))
        await right.send_batch(rb([{"k": 2, "t": 5.5}]))
        await until(lambda: out, what="a pair after the restart")
    assert crashes[0].to_pylist() == [{"k": 1, "t": 1.0, "r_t": 1.2}]
    assert out[0].to_pylist() == [{"k": 2, "t": 5.0, "r_t": 5.5}]
    # Its rows were in the dropped join's buffer: never acknowledged.
    assert first.abandoned and not first.done


def test_keys_that_do_not_convert_to_the_other_sides_type_are_rejected_not_raised():
    join = IntervalJoin(within=1.0, on="k", time="t", prefix="r_")
    join.add(LEFT, "l", join.read(LEFT, pa.RecordBatch.from_pylist([{"k": 1, "t": 1.0}])))
    step = join.add(RIGHT, "r", join.read(RIGHT, pa.RecordBatch.from_pylist(
        [{"k": "one", "t": 1.0}, {"k": "two", "t": 1.0}])))
    assert [i for i, _ in step.rejects] == [0, 1]
    assert step.rejects[0][1].startswith("SchemaError: join key column 'k' of the right side "
                                         "has type string")
    assert step.output is None and not step.buffered
    step = join.add(RIGHT, "r2", join.read(RIGHT, pa.RecordBatch.from_pylist(
        [{"k": 1, "t": 1.5}])))
    assert step.output.to_pylist() == [{"k": 1, "t": 1.0, "r_t": 1.5}]


async def test_a_stop_request_gives_up_the_buffered_batches():
    app, left, right, match, out = interval_app(within=1.0, on="k", time="t", prefix="r_")
    async with running(app):
        buffered = Batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 1.0}]))
        await left.publish(buffered)
        await until(lambda: buffered.refs == 1, what="the batch held by the buffer alone")
        app.request_stop()
        await until(lambda: buffered.abandoned, what="the batch given up")
        # What comes after the request is not held either.
        later = Batch(pa.RecordBatch.from_pylist([{"k": 2, "t": 2.0}]))
        await left.publish(later)
        await until(lambda: later.abandoned, what="the later batch given up")
    assert not buffered.done and not later.done


def test_a_batch_whose_schema_does_not_fit_its_side_is_rejected_whole():
    join = IntervalJoin(within=1.0, on="k", time="t", prefix="r_")
    join.add(LEFT, "l1", join.read(LEFT, pa.RecordBatch.from_pylist([{"k": 1, "t": 1.0,
                                                                       "x": 5}])))
    # No column x, and x's place taken by a string: neither converts.
    step = join.add(LEFT, "l2", join.read(LEFT, pa.RecordBatch.from_pylist(
        [{"k": 1, "t": 2.0, "y": "a"}, {"k": 2, "t": 2.5, "y": "b"}])))
    assert [i for i, _ in step.rejects] == [0, 1]
    assert "does not fit the left side's schema" in step.rejects[0][1]
    assert not step.buffered and join.buffered_rows == 1
    # A narrower integer type still fits (cast safely).
    step = join.add(LEFT, "l3", join.read(LEFT, pa.RecordBatch.from_arrays(
        [pa.array([3], pa.int64()), pa.array([3.0]), pa.array([7], pa.int32())],
        ["k", "t", "x"])))
    assert step.rejects == [] and step.buffered


async def test_the_agents_own_stream_stays_the_current_one_for_tables():
    from sabot.streams import current_stream
    app = sabot.App(unique("interval"))
    left, right = app.channel(), app.channel()
    payments = right.stream()
    seen = []

    @app.agent(left)
    async def match(stream):
        async for _ in stream.join_within(payments, within=1.0, on="k", time="t", prefix="r_"):
            seen.append(current_stream() is stream)

    async with running(app):
        await left.send_batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 1.0}]))
        await right.send_batch(pa.RecordBatch.from_pylist([{"k": 1, "t": 1.5}]))
        await until(lambda: seen, what="a pair")
    assert seen == [True]
