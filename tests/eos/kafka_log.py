"""A Kafka partition's log as the broker stores it: record batches with their
producer id, transactional flag and control markers (a raw Fetch, read
uncommitted).

tansu writes the commit and abort markers but returns no list of aborted
transactions on fetch, so a ``read_committed`` consumer on tansu also sees
aborted records. ``committed_values`` does what the broker's list is for:
a transactional batch counts once its producer's next marker is a commit;
an abort drops it, and a transaction without a marker yet (still open, or
left open by a killed producer) does not count.
"""
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.control_record import ABORT_MARKER, COMMIT_MARKER, ControlRecord
from aiokafka.record.memory_records import MemoryRecords

__all__ = ["read_log", "log_end", "committed_values", "markers"]

_MAX = 64 << 20


async def read_log(bootstrap, topic, partition=0):
    """Every batch of ``topic[partition]``: dicts of producer_id, transactional,
    control (None, "commit" or "abort"), and the records' (offset, value)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        client.add_topic(topic)
        await client.force_metadata_update()
        node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        batches = []
        offset = 0
        while True:
            response = await client.send(node, FetchRequest(
                100, 1, _MAX, 0, [(topic, [(partition, offset, _MAX)])]))
            (_, parts), = response.topics
            (_, error_code, highwater, *part_data), = parts
            assert error_code == 0, error_code
            records = MemoryRecords(part_data[-1])
            got = False
            while records.has_next():
                batch = records.next_batch()
                got = True
                entries = list(batch)
                control = None
                if batch.is_control_batch:
                    marker = ControlRecord.parse(entries[0].key)
                    control = ("abort" if marker == ABORT_MARKER
                               else "commit" if marker == COMMIT_MARKER else "other")
                batches.append({"producer_id": batch.producer_id,
                                "epoch": batch.producer_epoch,
                                "transactional": batch.is_transactional,
                                "control": control,
                                "records": [(r.offset, r.value) for r in entries],
                                "keys": [r.key for r in entries]})
                offset = batch.next_offset
            if not got or offset >= highwater:
                return batches
    finally:
        await client.close()


async def log_end(bootstrap, topic, partition=0):
    """The partition's high watermark, from a Fetch (tansu's ListOffsets is not
    reliable for it)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        client.add_topic(topic)
        await client.force_metadata_update()
        node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        response = await client.send(node, FetchRequest(
            100, 1, 1024, 0, [(topic, [(partition, 0, 1024)])]))
        (_, parts), = response.topics
        (_, error_code, highwater, *_), = parts
        assert error_code == 0, error_code
        return highwater
    finally:
        await client.close()


def committed_values(batches):
    """The values a read_committed consumer must see, from ``read_log``'s batches.

    A producer's pending transaction is dropped when a batch of a newer epoch
    of the same producer id shows up without a commit marker in between (a
    producer restarted under the same transactional id: the old transaction
    was aborted, whether or not the broker wrote the marker).
    """
    return [value for _, value in committed_records(batches)]


def committed_records(batches):
    """``(key, value)`` of what a read_committed consumer must see (as ``committed_values``)."""
    out = []
    pending = {}  # producer id -> (epoch, records)
    for batch in batches:
        pid, epoch = batch["producer_id"], batch["epoch"]
        records = list(zip(batch.get("keys") or [None] * len(batch["records"]),
                           (v for _, v in batch["records"])))
        open_epoch, held = pending.get(pid, (epoch, []))
        if epoch > open_epoch and batch["control"] is None:
            held = []  # the old epoch's transaction can no longer commit
        if batch["control"] is not None:
            pending.pop(pid, None)
            if batch["control"] == "commit" and epoch >= open_epoch:
                out.extend(held)
        elif batch["transactional"]:
            held.extend(records)
            pending[pid] = (epoch, held)
        else:
            out.extend(records)
    return out


def markers(batches):
    """How many commit and abort markers the log holds."""
    kinds = [b["control"] for b in batches if b["control"] is not None]
    return kinds.count("commit"), kinds.count("abort")


async def create_topics(bootstrap, *topics):
    """Create ``(name, partitions)`` topics (one replica each)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in topics])
    finally:
        await admin.close()
