"""``@app.timer`` and ``@app.crontab``: Faust's signatures, a fixed grid, leader-only runs."""
import datetime

import pytest

import sabot
from sabot.exceptions import ConfigurationError
from sabot.durations import want_seconds
from sabot.schedules import Crontab, Interval
from tests.helpers import running, until


async def test_timer_takes_interval_by_keyword_and_as_timedelta():
    app = sabot.App("timers")
    ticks = []

    @app.timer(interval=0.02)
    async def by_keyword():
        ticks.append("kw")

    @app.timer(datetime.timedelta(milliseconds=20), name="td")
    async def by_timedelta(the_app):
        ticks.append(the_app is app)

    async with running(app):
        await until(lambda: ticks.count("kw") >= 2 and ticks.count(True) >= 2, what="both timers")
    assert [s.name for s in app.schedules] == [by_keyword.__qualname__, "td"]
    assert False not in ticks


@pytest.mark.parametrize("bad", [0, -1, "5", None, True, float("inf"), datetime.timedelta(0)])
def test_a_bad_interval_is_refused_naming_it(bad):
    app = sabot.App("timers")
    with pytest.raises(ConfigurationError, match="timer interval"):
        app.timer(bad)


def test_a_timer_must_be_async():
    app = sabot.App("timers")
    with pytest.raises(ConfigurationError, match="async"):
        app.timer(1.0)(lambda: None)


def test_interval_beats_keep_a_fixed_grid():
    beat = Interval(_noop, 10.0)
    assert beat.next_delay(started=100.0, now=100.0) == pytest.approx(10.0)
    # A slow run (finished at 113) waits for the next grid point, 120, not 123.
    assert beat.next_delay(started=100.0, now=113.0) == pytest.approx(7.0)
    # Missed beats are skipped, not run back to back.
    assert beat.next_delay(started=100.0, now=145.0) == pytest.approx(5.0)


def test_crontab_next_time_in_its_time_zone():
    tz = datetime.timezone(datetime.timedelta(hours=2))
    cron = Crontab(_noop, "30 18 * * *", tz)
    # 2026-12-02 16:00 UTC is 18:00 at +02:00: the next 18:30 there is 30 minutes away.
    now = datetime.datetime(2026, 12, 2, 16, 0, tzinfo=datetime.timezone.utc).timestamp()
    assert cron.next_delay(now, now) == pytest.approx(1800.0)
    utc = Crontab(_noop, "30 18 * * *", None)
    assert utc.next_delay(now, now) == pytest.approx(2.5 * 3600)


@pytest.mark.parametrize("bad", ["* * *", "61 * * * *", "every minute", 5])
def test_a_bad_cron_expression_is_refused(bad):
    app = sabot.App("cron")
    with pytest.raises(ConfigurationError, match="cron"):
        app.crontab(bad)(_noop)


async def test_crontab_fires(monkeypatch):
    # Every minute, with the clock moved to one second before the minute.
    app = sabot.App("cron")
    fired = []

    @app.crontab("* * * * *", timezone=datetime.timezone.utc)
    async def every_minute():
        fired.append(1)

    real = __import__("time").time
    now = real()
    offset = (60 - now % 60) - 0.05  # 50 ms before the next minute
    monkeypatch.setattr("sabot.schedules.time.time", lambda: real() + offset)
    async with running(app):
        await until(lambda: fired, timeout=5.0, what="the crontab to fire")
    assert app.schedules[0].runs >= 1


async def test_a_timer_that_raises_keeps_its_schedule(caplog):
    app = sabot.App("timers")
    calls = []

    @app.timer(0.01)
    async def flaky():
        calls.append(1)
        raise RuntimeError("boom")

    async with running(app):
        await until(lambda: len(calls) >= 3, what="three calls despite errors")
    assert "boom" in caplog.text


async def test_on_leader_runs_on_a_memory_app_which_always_leads():
    app = sabot.App("leader")
    ran = []

    @app.timer(0.01, on_leader=True)
    async def leader_only():
        ran.append(1)

    assert app.is_leader()
    async with running(app):
        await until(lambda: len(ran) >= 2, what="leader-only timer runs")


def test_want_seconds():
    assert want_seconds(1) == 1.0
    assert want_seconds(datetime.timedelta(minutes=1)) == 60.0


async def _noop():
    return None
