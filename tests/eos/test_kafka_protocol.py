"""InitProducerId v3 from aiokafka (sabot/channels/kafka_protocol.py), against
the real broker (tansu accepts InitProducerId only from version 3 on).
"""
import io

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.transaction import InitProducerIdRequest_v0

from sabot.channels import kafka_protocol
from sabot.channels.kafka_protocol import (InitProducerIdRequest, InitProducerIdRequest_v3,
                                           InitProducerIdResponse_v3)
from tests.helpers import unique

pytestmark = pytest.mark.kafka


def test_the_highest_version_the_broker_allows_is_sent():
    request = InitProducerIdRequest("app-t-0", 60000)
    v3 = request.prepare({22: (0, 4)})
    assert isinstance(v3, InitProducerIdRequest_v3)
    assert v3.FLEXIBLE_VERSION
    assert (v3.transactional_id, v3.transaction_timeout_ms, v3.producer_id,
            v3.producer_epoch) == ("app-t-0", 60000, -1, -1)
    assert isinstance(request.prepare({22: (0, 2)}), InitProducerIdRequest_v0)
    assert isinstance(request.prepare({22: (3, 3)}), InitProducerIdRequest_v3)


def test_v3_encodes_as_the_flexible_schema_says():
    data = InitProducerIdRequest_v3(None, 1000, -1, -1, {}).encode()
    # compact nullable string: varint 0 is null; int32; int64 -1; int16 -1; no tags
    assert data == (b"\x00" + (1000).to_bytes(4, "big") + b"\xff" * 8 + b"\xff\xff" + b"\x00")
    reply = (0).to_bytes(4, "big") + b"\x00\x00" + (7).to_bytes(8, "big") + (2).to_bytes(2, "big") + b"\x00"
    response = InitProducerIdResponse_v3.decode(io.BytesIO(reply))
    assert (response.error_code, response.producer_id, response.producer_epoch) == (0, 7, 2)


async def test_transactions_commit_outputs_and_offsets_together_on_tansu(kafka_broker):
    kafka_protocol.install()
    source, target, group = unique("in"), unique("out"), unique("g")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source, 1, 1), NewTopic(target, 1, 1)])
    finally:
        await admin.close()
    plain = AIOKafkaProducer(bootstrap_servers=kafka_broker)
    await plain.start()
    for i in range(10):
        await plain.send_and_wait(source, b"%d" % i)
    await plain.stop()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker,
                                transactional_id=f"{group}-{source}-0")
    await producer.start()  # InitProducerId v3: refused in v0 by tansu
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker, group_id=group,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    tp = TopicPartition(source, 0)
    try:
        assert producer._txn_manager.producer_id >= 0
        async with producer.transaction():
            await producer.send(target, b"out")
            await producer.send_offsets_to_transaction({tp: 4}, group)
        assert await consumer.committed(tp) == 4
        with pytest.raises(RuntimeError):
            async with producer.transaction():
                await producer.send(target, b"aborted")
                await producer.send_offsets_to_transaction({tp: 9}, group)
                raise RuntimeError("abort")
        assert await consumer.committed(tp) == 4  # the aborted offsets are not committed
    finally:
        await consumer.stop()
        await producer.stop()
