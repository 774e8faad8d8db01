"""The dead-letter rule without a broker: fitting, encoding, counting.

The same writer serves Kafka and Redis; their tests (test_kafka.py,
test_redis_dead_letters.py, test_hostile_input.py) check it against real servers.
"""
import asyncio

import sabot
from sabot.channels.dead_letters import TRUNCATED_HEADER, fit_message


def test_a_message_that_fits_is_left_alone():
    headers = {"sabot-error": b"bad", "h": b"x"}
    assert fit_message(b"abc", headers, 10_000) == (b"abc", headers, False)
    assert fit_message(b"abc" * 10_000, headers, None) == (b"abc" * 10_000, headers, False)


def test_a_message_too_big_is_cut_and_marked_with_its_size():
    payload = bytes(range(256)) * 8000
    body, headers, cut = fit_message(payload, {"sabot-error": b"bad"}, 64 * 1024)
    assert cut and payload.startswith(body) and 0 < len(body) < 64 * 1024
    assert headers[TRUNCATED_HEADER] == str(len(payload)).encode()
    assert headers["sabot-error"] == b"bad"
    size = len(body) + sum(len(k) + len(v) for k, v in headers.items())
    assert size < 64 * 1024


def test_foreign_headers_go_first_and_the_reason_stays():
    big = {f"h{i}": b"v" * 1000 for i in range(100)}
    body, headers, cut = fit_message(b"p" * 10, {"sabot-error": b"why", **big}, 20_000)
    assert cut and headers["sabot-error"] == b"why"
    assert headers["sabot-headers-dropped"] == b"100"
    assert not any(k.startswith("h") for k in headers)
    # With no room at all only (cut) headers remain.
    body, headers, cut = fit_message(b"p" * 10, {"sabot-error": b"why" * 100}, 0)
    assert body == b"" and cut


async def test_memory_dead_letter_keeps_the_value_and_counts_when_stored():
    app = sabot.App("dl-memory")
    ch = app.channel(name="orders")
    dead = ch.dead_letter_channel().__aiter__()
    written = await ch.dead_letter({"id": 1}, "ValueError: no", {"sabot-agent": "a"})
    assert written.done() and written.exception() is None
    assert ch.dead_letters_sent == 1 and ch.dead_letters.truncated == 0
    assert await asyncio.wait_for(dead.__anext__(), 1) == {"id": 1}


def test_a_value_no_codec_can_write_is_kept_as_its_repr():
    app = sabot.App("dl-encode")
    ch = app.channel(name="odd")

    class Odd:
        def __repr__(self):
            return "<Odd 7>"
    assert ch.dead_letters.encode(b"raw") == b"raw"
    assert ch.dead_letters.encode({"a": 1}) == b'{"a":1}'
    assert ch.dead_letters.encode(Odd()) == b"<Odd 7>"
