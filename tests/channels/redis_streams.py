"""What the Redis tests share: an app on a test server, entries put in a stream
with redis-py, and the consumer group read back from the server (XPENDING,
XINFO, XRANGE) to check what was acknowledged.
"""
import sabot
from tests.helpers import unique

__all__ = ["make_app", "redis_transport", "preload", "json_bytes", "pending_count",
           "pending_ids", "last_delivered", "acked_ids"]


def make_app(server, app_id=None, **settings):
    """An app on ``server`` (a fresh id unless given) that gives up connecting after 3 s."""
    settings.setdefault("broker_connect_timeout", 3.0)
    return sabot.App(app_id or unique("app"), redis_url=server.url, **settings)


def redis_transport(app):
    return next(t for t in app.transports if t.scheme == "redis")


def preload(client, stream, values, field=b"value"):
    """XADD ``values`` (bytes) with redis-py; returns the entry ids in order."""
    pipe = client.pipeline(transaction=False)
    for v in values:
        pipe.xadd(stream, {field: v})
    return [eid.decode() for eid in pipe.execute()]


def json_bytes(i):
    return b'{"i":%d}' % i


def pending_count(client, stream, group):
    """XPENDING's count; -1 while the group does not exist yet."""
    import redis
    try:
        return client.xpending(stream, group)["pending"]
    except redis.ResponseError as exc:
        if str(exc).startswith("NOGROUP"):
            return -1
        raise


def pending_ids(client, stream, group):
    return {p["message_id"].decode()
            for p in client.xpending_range(stream, group, "-", "+", 1_000_000)}


def last_delivered(client, stream, group):
    """The id of the last entry the group has read (XINFO GROUPS)."""
    info = {g["name"].decode(): g for g in client.xinfo_groups(stream)}[group]
    return info["last-delivered-id"].decode()


def acked_ids(client, stream, group):
    """Ids the group has read and acknowledged (delivered, no longer pending)."""
    last = last_delivered(client, stream, group)
    delivered = {eid.decode() for eid, _ in client.xrange(stream, "-", last)}
    return delivered - pending_ids(client, stream, group)
