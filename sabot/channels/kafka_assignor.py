"""The consumer group's partition assignor: who holds what, and at which web URL.

Faust's assignor carries each member's ``canonical_url`` in its group-join
metadata, and the group leader sends every member the whole map of which URL
holds which partitions; ``app.table_route``/``app.topic_route`` use it to
forward a request to the worker holding the key (``sabot.web.routing``).
Sabot does the same around aiokafka's round-robin assignment, which it used
before (the partitions go where they went: the leader partition, tables and
standbys are unchanged):

* member metadata ``user_data``: ``{"v": 1, "url": "http://host:port"}``
  (``url`` null for a worker without a web server);
* assignment ``user_data``, the same for every member:
  ``{"v": 1, "urls": {url: {topic: [partition, ...]}}}``.

The protocol is named ``sabot``; the consumer also offers ``roundrobin``, so
a group mixing workers of an older Sabot still forms (Kafka picks the protocol
every member offers) and only the URLs are missing.

Both payloads come from the network: they are decoded defensively (JSON of
bounded size, a version, every type and URL checked). One that does not fit
is logged in one line and ignored (no URL, no map): requests for keys held
elsewhere then answer 503 as without the map. Two members announcing the same
URL are left out of the map (one of them would be answered by the other).
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import (ConsumerProtocolMemberAssignment,
                                           ConsumerProtocolMemberMetadata)

from ..canonical import valid_http_url
from ..settings import redact_url

__all__ = ["SabotAssignor", "PartitionMap", "decode_member", "decode_assignment",
           "encode_member", "encode_assignment", "FORMAT_VERSION"]

logger = logging.getLogger("sabot.channels.kafka")

#: Version of both payloads; another version is ignored (logged).
FORMAT_VERSION = 1
#: Largest member metadata payload read (a URL and a little JSON).
MAX_MEMBER_BYTES = 4096
#: Largest assignment payload read (the whole map).
MAX_ASSIGNMENT_BYTES = 4 * 1024 * 1024
#: Kafka's limits on a topic name and a partition number.
MAX_TOPIC_LENGTH = 249
MAX_PARTITION = 2 ** 31 - 1

#: {url: {topic: [partition, ...]}}
PartitionMap = Dict[str, Dict[str, List[int]]]


class _Malformed(ValueError):
    """A payload that does not fit its format (the message says why, in one line)."""


def encode_member(url: Optional[str]) -> bytes:
    """Member metadata ``user_data`` announcing ``url`` (None: no web server)."""
    return json.dumps({"v": FORMAT_VERSION, "url": url}, separators=(",", ":")).encode()


def encode_assignment(urls: PartitionMap) -> bytes:
    """Assignment ``user_data`` carrying the whole map."""
    return json.dumps({"v": FORMAT_VERSION, "urls": urls}, separators=(",", ":"),
                      sort_keys=True).encode()


def _load(data: Any, limit: int) -> Dict[str, Any]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _Malformed(f"not bytes but {type(data).__name__}")
    if len(data) > limit:
        raise _Malformed(f"{len(data)} bytes, more than {limit}")
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Malformed(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise _Malformed(f"a JSON {type(obj).__name__}, not an object")
    version = obj.get("v")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise _Malformed(f"format version {version!r:.20}, not {FORMAT_VERSION}")
    return obj


def _url(value: Any) -> str:
    if not isinstance(value, str) or not valid_http_url(value):
        raise _Malformed("a URL that is not http(s)://host[:port]")
    return value


def _partitions(value: Any) -> List[int]:
    if not isinstance(value, list):
        raise _Malformed("partitions that are not a list")
    for p in value:
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= MAX_PARTITION:
            raise _Malformed("a partition that is not a number from 0 to 2**31-1")
    return sorted(set(value))


def _topics(value: Any) -> Dict[str, List[int]]:
    if not isinstance(value, dict):
        raise _Malformed("topics that are not an object")
    out = {}
    for topic, partitions in value.items():
        if not topic or len(topic) > MAX_TOPIC_LENGTH:
            raise _Malformed("a topic name that is empty or too long")
        out[topic] = _partitions(partitions)
    return out


def _member_url(data: Any) -> Optional[str]:
    if not data:
        return None  # a member that says nothing has no URL
    url = _load(data, MAX_MEMBER_BYTES).get("url")
    return None if url is None else _url(url)


def _assignment_map(data: Any) -> PartitionMap:
    if not data:
        return {}
    urls = _load(data, MAX_ASSIGNMENT_BYTES).get("urls")
    if not isinstance(urls, dict):
        raise _Malformed("no 'urls' object")
    return {_url(url): _topics(topics) for url, topics in urls.items()}


def _decoded(decode: Callable[[Any], Any], data: Any, what: str, empty: Any) -> Any:
    try:
        return decode(data)
    except _Malformed as exc:
        logger.warning("ignoring the %s: %s", what, exc)
    except Exception as exc:  # never let a peer's bytes stop the consumer
        logger.warning("ignoring the %s: %s", what, type(exc).__name__)
    return empty


def decode_member(data: Any) -> Optional[str]:
    """The URL a member announced, or None (none, or a payload that does not fit: logged)."""
    return _decoded(_member_url, data, "web URL a group member announced", None)


def decode_assignment(data: Any) -> PartitionMap:
    """The map the group leader sent, or ``{}`` (a payload that does not fit: logged)."""
    return _decoded(_assignment_map, data, "partition map the group leader sent", {})


def _unique_urls(urls: Mapping[str, Optional[str]]) -> Dict[str, str]:
    """member id -> URL, without members sharing a URL with another (logged)."""
    count: Dict[str, int] = {}
    for url in urls.values():
        if url is not None:
            count[url] = count.get(url, 0) + 1
    for url, n in sorted(count.items()):
        if n > 1:
            logger.warning("%d group members announce the web URL %s: requests for their "
                           "partitions are not forwarded (set canonical_url on each)",
                           n, redact_url(url))
    return {member: url for member, url in urls.items()
            if url is not None and count[url] == 1}


class SabotAssignor(AbstractPartitionAssignor):
    """aiokafka's round-robin assignment, with every member's web URL and the whole map.

    One instance per consumer: ``url()`` gives this worker's URL when it joins;
    ``urls`` is the map this worker was last sent.
    """

    name = "sabot"
    version = 0

    def __init__(self, url: Callable[[], Optional[str]]) -> None:
        self.url = url
        #: {url: {topic: [partition, ...]}} of the last assignment, every member's.
        self.urls: PartitionMap = {}
        self._owners: Dict[tuple, str] = {}

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        try:
            url = self.url()
        except Exception as exc:  # a join must not fail on the URL
            logger.warning("announcing no web URL: %s", type(exc).__name__)
            url = None
        return ConsumerProtocolMemberMetadata(self.version, list(topics), encode_member(url))

    def assign(self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> Dict[str, ConsumerProtocolMemberAssignment]:
        assigned = RoundRobinPartitionAssignor.assign(cluster, members)
        urls = _unique_urls({member: decode_member(m.user_data)
                             for member, m in members.items()})
        everyone: PartitionMap = {}
        for member, assignment in assigned.items():
            if member in urls:
                everyone[urls[member]] = {topic: sorted(partitions)
                                          for topic, partitions in assignment.assignment}
        payload = encode_assignment(everyone)
        return {member: ConsumerProtocolMemberAssignment(
                    assignment.version, assignment.assignment, payload)
                for member, assignment in assigned.items()}

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.set_map(decode_assignment(assignment.user_data))

    def set_map(self, urls: PartitionMap) -> None:
        """Take ``urls`` as the group's map (``{}``: none known)."""
        self.urls = urls
        self._owners = {(topic, p): url for url, topics in urls.items()
                        for topic, partitions in topics.items() for p in partitions}

    def owner(self, topic: str, partition: int) -> Optional[str]:
        """The URL of the member holding ``partition`` of ``topic``, if announced."""
        return self._owners.get((topic, partition))

    def holders(self, partition: int) -> List[str]:
        """URLs of the members holding ``partition`` of any topic (a table's partition)."""
        return sorted({url for (_, p), url in self._owners.items() if p == partition})
