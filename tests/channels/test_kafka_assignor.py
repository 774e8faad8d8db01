"""Sabot's Kafka partition assignor: URLs in the group protocol, decoded defensively.

The unit tests feed the decoders what a hostile or broken peer could send
(random bytes, wrong JSON, wrong types, huge payloads): each is ignored with
one logged line, never an exception. The tansu tests form real consumer
groups: the broker passes the ``sabot`` protocol and its metadata through,
every member gets the whole map, the distribution is round robin's, and a
member of an older Sabot (round robin only) still joins.
"""
import json
import logging
import random

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from sabot.channels.kafka_assignor import (MAX_ASSIGNMENT_BYTES, SabotAssignor,
                                           decode_assignment, decode_member, encode_assignment,
                                           encode_member)
from tests.helpers import unique, until

GOOD_MAP = {"http://a:6066": {"orders": [0, 2]}, "http://b:6067": {"orders": [1, 3]}}


def ours(caplog):
    """The records of the assignor's logger (not what other tests' leftovers log meanwhile)."""
    return [r for r in caplog.records if r.name == "sabot.channels.kafka"]


# -- the decoders ----------------------------------------------------------------------

def test_what_is_encoded_decodes_back():
    assert decode_member(encode_member("http://host:6066")) == "http://host:6066"
    assert decode_member(encode_member(None)) is None
    assert decode_member(b"") is None
    assert decode_assignment(encode_assignment(GOOD_MAP)) == GOOD_MAP
    assert decode_assignment(b"") == {}


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "a JSON list"),
    (b'{"url": "http://a:1"}', "format version None"),
    (b'{"v": 2, "url": "http://a:1"}', "format version 2"),
    (b'{"v": true, "url": "http://a:1"}', "format version True"),
    (b'{"v": 1, "url": "ftp://a:1"}', "not http(s)"),
    (b'{"v": 1, "url": "http://a b:1"}', "not http(s)"),
    (b'{"v": 1, "url": "http://a:99999"}', "not http(s)"),
    (b'{"v": 1, "url": 7}', "not http(s)"),
    (b'{"v": 1, "url": "http://' + b"a" * 5000 + b'"}', "more than 4096"),
    (b"[" * 100_000 + b"]" * 100_000, "more than"),
])
def test_a_member_payload_that_does_not_fit_is_ignored_in_one_line(payload, reason, caplog):
    with caplog.at_level(logging.WARNING, "sabot.channels.kafka"):
        assert decode_member(payload) is None
    [record] = ours(caplog)
    assert reason in record.getMessage() and "\n" not in record.getMessage()


@pytest.mark.parametrize("urls, reason", [
    (None, "no 'urls' object"),
    ([], "no 'urls' object"),
    ({"http://a:1": [0]}, "topics that are not an object"),
    ({"http://a:1": {"t": 0}}, "partitions that are not a list"),
    ({"http://a:1": {"t": [-1]}}, "a partition that is not"),
    ({"http://a:1": {"t": [2 ** 31]}}, "a partition that is not"),
    ({"http://a:1": {"t": [True]}}, "a partition that is not"),
    ({"http://a:1": {"t": ["0"]}}, "a partition that is not"),
    ({"http://a:1": {"": [0]}}, "a topic name"),
    ({"http://a:1": {"t" * 250: [0]}}, "a topic name"),
    ({"javascript:alert(1)": {"t": [0]}}, "not http(s)"),
])
def test_an_assignment_payload_that_does_not_fit_is_ignored(urls, reason, caplog):
    payload = json.dumps({"v": 1, "urls": urls}).encode()
    with caplog.at_level(logging.WARNING, "sabot.channels.kafka"):
        assert decode_assignment(payload) == {}
    [record] = ours(caplog)
    assert reason in record.getMessage()


def test_a_huge_assignment_payload_is_not_parsed(caplog):
    payload = b" " * (MAX_ASSIGNMENT_BYTES + 1)
    with caplog.at_level(logging.WARNING, "sabot.channels.kafka"):
        assert decode_assignment(payload) == {}
    [record] = ours(caplog)
    assert "more than" in record.getMessage()


def test_fuzzed_bytes_never_raise():
    rng = random.Random(12)
    good = [encode_member("http://h:1"), encode_assignment(GOOD_MAP)]
    for i in range(3000):
        if i % 2:  # mutate a valid payload: flipped, cut or repeated bytes
            data = bytearray(rng.choice(good))
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(data))
                data[at] = rng.randrange(256)
            data = bytes(data[:rng.randint(0, len(data))])
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        url = decode_member(data)
        assert url is None or isinstance(url, str)
        got = decode_assignment(data)
        assert isinstance(got, dict)
        for topics in got.values():
            assert all(isinstance(p, int) for ps in topics.values() for p in ps)


def test_a_malformed_assignment_clears_the_map_and_never_raises():
    assignor = SabotAssignor(lambda: "http://me:1")
    assignor.set_map(GOOD_MAP)
    assert assignor.owner("orders", 3) == "http://b:6067"

    class Assignment:
        user_data = b"\x00not json"
    assignor.on_assignment(Assignment())
    assert assignor.urls == {} and assignor.owner("orders", 3) is None


class _Cluster:
    def __init__(self, partitions):
        self.partitions = partitions

    def partitions_for_topic(self, topic):
        return self.partitions.get(topic)


def test_assign_is_round_robin_plus_the_map_and_skips_bad_or_shared_urls(caplog):
    cluster = _Cluster({"orders": {0, 1, 2, 3}, "app-__assignor-__leader": {0}})
    topics = ["orders", "app-__assignor-__leader"]
    members = {
        "m1": ConsumerProtocolMemberMetadata(0, topics, encode_member("http://a:1")),
        "m2": ConsumerProtocolMemberMetadata(0, topics, b"garbage"),
        "m3": ConsumerProtocolMemberMetadata(0, topics, encode_member("http://c:1")),
        "m4": ConsumerProtocolMemberMetadata(0, topics, encode_member("http://c:1")),
    }
    with caplog.at_level(logging.WARNING, "sabot.channels.kafka"):
        got = SabotAssignor(lambda: None).assign(cluster, members)
    expected = RoundRobinPartitionAssignor.assign(cluster, members)
    assert {m: a.assignment for m, a in got.items()} == \
        {m: a.assignment for m, a in expected.items()}
    maps = {decode_assignment(a.user_data).__repr__() for a in got.values()}
    assert len(maps) == 1  # every member gets the same map
    the_map = decode_assignment(got["m1"].user_data)
    assert list(the_map) == ["http://a:1"]  # m2 sent garbage, m3 and m4 share a URL
    assert the_map["http://a:1"] == {t: ps for t, ps in expected["m1"].assignment}
    messages = [r.getMessage() for r in ours(caplog)]
    assert any("2 group members announce the web URL http://c:1" in m for m in messages)


# -- a real group on tansu ---------------------------------------------------------------


async def _topic(kafka_broker, name, partitions):
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


def _consumer(kafka_broker, group, topic, strategies):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_broker, group_id=group,
                                session_timeout_ms=6000, heartbeat_interval_ms=500,
                                partition_assignment_strategy=strategies)
    return consumer


@pytest.mark.kafka
async def test_tansu_passes_the_sabot_protocol_and_every_member_gets_the_map(kafka_broker):
    group, topic = unique("assignor"), unique("assigned")
    await _topic(kafka_broker, topic, 4)
    a = SabotAssignor(lambda: "http://127.0.0.1:7001")
    b = SabotAssignor(lambda: "http://127.0.0.1:7002")
    ca = _consumer(kafka_broker, group, topic, (a, RoundRobinPartitionAssignor))
    cb = _consumer(kafka_broker, group, topic, (b, RoundRobinPartitionAssignor))
    await ca.start()
    await cb.start()
    try:
        def held(c):
            return sorted(tp.partition for tp in c.assignment())

        def settled():
            return (held(ca) and held(cb) and sorted(held(ca) + held(cb)) == [0, 1, 2, 3]
                    and a.urls == b.urls and len(a.urls) == 2)

        async def poll():  # the group rebalances as the consumers fetch
            for c in (ca, cb):
                await c.getmany(timeout_ms=50)
            return settled()
        await until(poll, 60, lambda: f"a {held(ca)} {a.urls} b {held(cb)} {b.urls}")
        assert a.urls == {"http://127.0.0.1:7001": {topic: held(ca)},
                          "http://127.0.0.1:7002": {topic: held(cb)}}
        assert sorted(len(held(c)) for c in (ca, cb)) == [2, 2]
        for p in range(4):
            assert a.owner(topic, p) == ("http://127.0.0.1:7001" if p in held(ca)
                                         else "http://127.0.0.1:7002")
    finally:
        await ca.stop()
        await cb.stop()


@pytest.mark.kafka
async def test_a_member_offering_only_round_robin_still_joins_without_urls(kafka_broker):
    group, topic = unique("assignor-mixed"), unique("assigned")
    await _topic(kafka_broker, topic, 4)
    a = SabotAssignor(lambda: "http://127.0.0.1:7001")
    ca = _consumer(kafka_broker, group, topic, (a, RoundRobinPartitionAssignor))
    old = _consumer(kafka_broker, group, topic, (RoundRobinPartitionAssignor,))
    # The older member first, as in a rolling upgrade: tansu refuses a member whose
    # protocols lack the one a group already chose (Kafka picks a common one).
    await old.start()
    await ca.start()
    try:
        def held(c):
            return sorted(tp.partition for tp in c.assignment())

        async def poll():
            for c in (ca, old):
                await c.getmany(timeout_ms=50)
            return held(ca) and held(old) and sorted(held(ca) + held(old)) == [0, 1, 2, 3]
        await until(poll, 60, lambda: f"a {held(ca)} old {held(old)}")
        assert a.urls == {}  # round robin was chosen: no map, requests answer 503
    finally:
        await ca.stop()
        await old.stop()
