"""App settings: one table of names, defaults, checks and documentation.

``App(id, **settings)`` validates every name against ``DEFAULTS``: an unknown
name or a value of the wrong kind raises ``ConfigurationError`` naming it.
Secrets (passwords, credentials, SSL contexts) never appear in ``repr``, in
``as_dict()`` or in an error message: a bad secret is reported by its name
and type, and URLs pass through ``redact_url`` before they are shown.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from typing import Any, Callable, Dict, NamedTuple, Optional
from urllib.parse import unquote_plus

from .canonical import valid_http_url
from .exceptions import ConfigurationError
from .faust_settings import UNSUPPORTED, warn_unsupported

__all__ = ["Settings", "DEFAULTS", "SECRET_NAMES", "URL_NAMES", "redact_url",
           "valid_bind_address"]


class Setting(NamedTuple):
    default: Any
    check: Optional[Callable[[Any], bool]]
    doc: str


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _non_negative_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _optional_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _any(v: Any) -> bool:
    return True


def _optional_ssl_context(v: Any) -> bool:
    return v is None or isinstance(v, ssl.SSLContext)


def _credentials(v: Any) -> bool:
    return (v is None or isinstance(v, (ssl.SSLContext, Mapping))
            or (isinstance(v, tuple) and len(v) == 2))


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def _codec_like(v: Any) -> bool:
    # A codec name or object; get_codec checks it fully when a topic is made.
    return _str(v) or (hasattr(v, "encode") and hasattr(v, "decode"))


def valid_bind_address(v: Any) -> bool:
    """An IP address (``127.0.0.1``, ``0.0.0.0``, ``::1``) or a host name to listen on."""
    if not isinstance(v, str) or not v or len(v) > 253:
        return False
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        pass
    labels = v[:-1].split(".") if v.endswith(".") else v.split(".")
    # A name whose last label is all digits would be a (bad) IPv4 address.
    return all(_HOST_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


#: name -> (default, check, documentation). Transports add their settings here.
DEFAULTS: Dict[str, Setting] = {
    "broker": Setting("memory://", _str,
                      "Where topics live: memory://, kafka://host:port[,host:port], redis://host:port/db."),
    "stream_buffer_maxsize": Setting(4096, _positive_int,
                                     "Values a subscriber may lag behind before senders wait (backpressure)."),
    "stream_buffer_max_batches": Setting(None, lambda v: v is None or _positive_int(v),
                                         "Batches a subscriber may lag behind before senders wait "
                                         "(backpressure); None: as many as stream_buffer_maxsize."),
    "stream_buffer_max_bytes": Setting(64 * 1024 * 1024, _positive_int,
                                       "Bytes of batches a subscriber may lag behind before senders wait "
                                       "(Arrow batches count their buffers; fetched messages their size)."),
    "stream_batch_size": Setting(1000, _positive_int,
                                 "Values gathered into one batch (schema'd channels, transport fetches)."),
    "stream_batch_linger": Setting(0.05, _non_negative_number,
                                   "Seconds a partial batch of a schema'd channel waits for more values."),
    "redis_url": Setting("redis://127.0.0.1:6379/0",
                         lambda v: _str(v) and v.lower().startswith(("redis://", "rediss://")),
                         "Redis server for app.redis_channel(); redis:// or rediss://, with user, password, db."),
    "broker_commit_interval": Setting(2.0, _positive_number,
                                      "Seconds between offset commits (Kafka)."),
    "broker_connect_timeout": Setting(10.0, _positive_number,
                                      "Seconds to reach the broker at start before failing with a clear error."),
    "broker_credentials": Setting(None, _credentials,
                                  "Credentials for the broker: an ssl.SSLContext, a (username, password) "
                                  "pair or a mapping (mechanism, username, password, ssl_context)."),
    "ssl_context": Setting(None, _optional_ssl_context, "ssl.SSLContext for TLS connections to the broker."),
    "sasl_mechanism": Setting(None, _optional_str, "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512."),
    "sasl_username": Setting(None, _optional_str, "SASL user name."),
    "sasl_password": Setting(None, _optional_str, "SASL password (never logged)."),
    "topic_allow_declare": Setting(True, _bool, "Create missing topics the app owns at start."),
    "topic_replication_factor": Setting(1, _positive_int, "Replicas of Kafka topics the app creates."),
    "broker_session_timeout": Setting(10.0, _positive_number, "Seconds without heartbeat before Kafka drops a worker from the group."),
    "broker_heartbeat_interval": Setting(3.0, _positive_number, "Seconds between Kafka consumer-group heartbeats."),
    "consumer_max_fetch_size": Setting(4 * 1024 * 1024, _positive_int, "Bytes a Kafka fetch may return per partition."),
    "producer_max_request_size": Setting(1024 * 1024, _positive_int, "Largest Kafka produce request in bytes (raise it for big Arrow batches)."),
    "broker_revoke_timeout": Setting(10.0, _positive_number, "Seconds a Kafka revoke waits for in-flight batches before committing."),
    # Kafka client settings with Faust's names; None leaves aiokafka's default.
    "producer_acks": Setting(-1, lambda v: v in (-1, 0, 1, "all"),
                             "Broker acknowledgements a send waits for: -1/'all' (every in-sync replica), 1, 0."),
    "producer_compression_type": Setting(None, lambda v: v in (None, "gzip", "snappy", "lz4", "zstd"),
                                         "Compression of produced batches: gzip, snappy, lz4, zstd or None."),
    "producer_linger": Setting(None, lambda v: v is None or _non_negative_number(v),
                               "Seconds the producer waits to fill a batch (aiokafka's linger_ms)."),
    "producer_linger_ms": Setting(None, lambda v: v is None or _non_negative_number(v),
                                  "Deprecated in Faust: producer_linger in milliseconds."),
    "producer_max_batch_size": Setting(None, lambda v: v is None or _positive_int(v),
                                       "Largest producer batch per partition in bytes."),
    "producer_request_timeout": Setting(None, lambda v: v is None or _positive_number(v),
                                        "Seconds a produce request may take."),
    "producer_metadata_max_age_ms": Setting(None, lambda v: v is None or _positive_int(v),
                                            "Producer metadata refresh interval in milliseconds."),
    "producer_connections_max_idle_ms": Setting(None, lambda v: v is None or _positive_int(v),
                                                "Producer idle connections close after this many ms."),
    "broker_client_id": Setting(None, _optional_str, "Client id the Kafka clients send."),
    "broker_request_timeout": Setting(None, lambda v: v is None or _positive_number(v),
                                      "Seconds a Kafka consumer request may take."),
    "broker_max_poll_records": Setting(None, lambda v: v is None or _positive_int(v),
                                       "Most records one Kafka fetch returns."),
    "broker_max_poll_interval": Setting(None, lambda v: v is None or _positive_number(v),
                                        "Seconds between fetches before Kafka drops a worker from the group."),
    "broker_rebalance_timeout": Setting(None, lambda v: v is None or _positive_number(v),
                                        "Seconds members have to rejoin the group in a rebalance."),
    "broker_check_crcs": Setting(True, _bool, "Check the CRC of fetched Kafka records."),
    "consumer_group_instance_id": Setting(None, _optional_str,
                                          "Static group membership id of this worker (KIP-345)."),
    "consumer_metadata_max_age_ms": Setting(None, lambda v: v is None or _positive_int(v),
                                            "Consumer metadata refresh interval in milliseconds."),
    "consumer_connections_max_idle_ms": Setting(None, lambda v: v is None or _positive_int(v),
                                                "Consumer idle connections close after this many ms."),
    "topic_partitions": Setting(4, _positive_int, "Partitions of topics the app creates."),
    "consumer_auto_offset_reset": Setting("earliest", lambda v: v in ("earliest", "latest"),
                                          "Where a consumer group with no committed position starts."),
    "dead_letter_suffix": Setting(".dlq", _str, "Suffix of dead-letter channels: <name><suffix>."),
    "redis_claim_idle_ms": Setting(30000, _positive_int,
                                   "Pending Redis entries idle this long are claimed from dead consumers."),
    "redis_block_ms": Setting(100, _positive_int, "XREADGROUP BLOCK time in milliseconds."),
    "worker_id": Setting(None, lambda v: v is None or (_str(v) and v.strip() != ""
                                                       and v.isprintable() and len(v) <= 200),
                         "Stable name of this worker: its Redis consumer name (its pending entries "
                         "are its own again after a restart); None: <host>-<pid>. --worker-id "
                         "overrides it; --processes children get <worker_id or host>-<index>."),
    "worker_processes": Setting(1, _positive_int,
                                "Worker processes `sabot worker` runs (--processes overrides it): "
                                "each a member of the consumer groups, supervised by the parent."),
    "shutdown_timeout": Setting(30.0, _positive_number,
                                "Seconds a graceful stop waits for in-flight batches."),
    "status_interval": Setting(10.0, _positive_number, "Seconds between worker status lines."),
    "agent_restart_backoff": Setting(0.1, _non_negative_number,
                                     "First delay before restarting an agent that crashed without progress."),
    # -- tables (sabot.tables) -------------------------------------------------------
    "store": Setting(None, lambda v: v is None or _str(v) or type(v).__name__ == "URL",
                     "Default store of tables (Faust's store): memory://, lmdb:// or rocksdb://. "
                     "None: lmdb:// for Kafka and Redis apps, memory:// for memory:// apps."),
    "datadir": Setting(None, lambda v: v is None or (isinstance(v, (str, os.PathLike)) and str(v) != ""),
                       "Directory of durable table stores (Faust's datadir); None: '<app id>-data'."),
    "table_standby_replicas": Setting(0, lambda v: isinstance(v, int) and not isinstance(v, bool)
                                      and v >= 0,
                                      "Faust's standby copies (Kafka): with 1 or more, every worker "
                                      "keeps a warm copy of the table partitions other workers "
                                      "hold, so a takeover reads only the changelog's tail."),
    "table_cleanup_interval": Setting(30.0, _positive_number,
                                      "Seconds between removals of expired windows of windowed tables."),
    "table_cache_max_keys": Setting(1_000_000, _positive_int,
                                    "Keys a table keeps decoded in memory; beyond it the cache is "
                                    "dropped after a flush and refilled from the store."),
    # -- Faust's app settings, with Faust's meaning --------------------------------
    "version": Setting(1, _positive_int,
                       "Version of the app: a version above 1 is a new, isolated app "
                       "named '<id>-v<version>' (its own consumer group, tables and leader)."),
    "origin": Setting(None, _optional_str,
                      "The app's package, scanned by autodiscover (default: the module that made the App)."),
    "autodiscover": Setting(False, lambda v: isinstance(v, bool) or callable(v) or (
                                isinstance(v, (list, tuple)) and all(_str(m) for m in v)),
                            "Import the app's modules at worker start so their agents register: "
                            "True (every module of origin), a list of packages, or a callable giving one."),
    "web_enabled": Setting(None, lambda v: v is None or isinstance(v, bool),
                           "Serve the worker's web pages. None: when web_port (or --web-port) is "
                           "given; True without web_port serves Faust's port 6066; False never."),
    "web_port": Setting(None, lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                                      and 0 <= v <= 65535),
                        "Port of the worker's web server (0: a free port); --web-port overrides it."),
    "key_serializer": Setting(None, lambda v: v is None or _codec_like(v),
                              "Codec of keys of the app's topics that name none (None: str as UTF-8, "
                              "others as JSON)."),
    "value_serializer": Setting("json", _codec_like,
                                "Codec of values of the app's topics that name none (Faust's default: json)."),
    "processing_guarantee": Setting("at_least_once",
                                    lambda v: getattr(v, "value", v) in ("at_least_once", "exactly_once"),
                                    "at_least_once (every value processed, some twice after a crash) "
                                    "or exactly_once."),
    "reply_to": Setting(None, _optional_str,
                        "Topic this app reads agent.ask() replies on (None: reply_to_prefix "
                        "and a new uuid per app instance, as Faust)."),
    "reply_to_prefix": Setting("f-reply-", _str, "Prefix of the generated reply topic (Faust's)."),
    "timezone": Setting(datetime.timezone.utc, lambda v: isinstance(v, datetime.tzinfo),
                        "Time zone of app.crontab schedules that name none (a tzinfo; Faust's default, UTC)."),
    "leader_lock_ttl": Setting(10.0, _positive_number,
                               "Seconds the Redis leader lock lives unless renewed (renewed every third "
                               "of it): a dead leader is replaced within this time."),
    "web_bind": Setting("127.0.0.1", valid_bind_address,
                        "Address the worker's web server (--web-port) listens on: an IP address "
                        "or host name; 0.0.0.0 for every interface (Faust's default, not Sabot's)."),
    "web_host": Setting(None, lambda v: v is None or valid_bind_address(v),
                        "Host name other workers reach this worker's web server by (Faust's "
                        "web_host), used for canonical_url. None: web_bind, or the machine's host "
                        "name when web_bind is every interface (0.0.0.0, ::)."),
    "canonical_url": Setting(None, lambda v: v is None or valid_http_url(v),
                             "URL other workers of the app reach this worker's web server at "
                             "(Faust's canonical_url): table_route/topic_route forward requests "
                             "there. None: http://<web_host>:<bound web port>."),
}

#: Names whose values are secrets: never shown in repr or logs.
SECRET_NAMES = frozenset({"sasl_password", "broker_credentials", "ssl_context"})


#: Settings holding URLs, shown only through ``redact_url``.
URL_NAMES = frozenset({"broker", "redis_url"})

#: What ``redact_url`` shows for a string it cannot take apart safely.
UNPARSABLE_URL = "<unparsable URL>"

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
#: Query parameter names (lower case, ``-`` as ``_``) whose values are secrets;
#: a name containing one of these words counts too (``ssl_password``, ``auth_token``).
_SECRET_PARAM_WORDS = ("pass", "pwd", "secret", "token", "credential", "auth", "apikey",
                       "api_key", "private", "signature")


def is_secret_param(name: str) -> bool:
    """True when a URL query parameter called ``name`` carries a secret."""
    key = unquote_plus(name).strip().lower().replace("-", "_")
    return (any(word in key for word in _SECRET_PARAM_WORDS)
            or key in ("key", "sig", "sas") or key.endswith("key"))


def redact_url(url: Any) -> str:
    """``url`` as it may be shown (logs, banners, reprs, errors): no secret left in it.

    The password of the userinfo becomes ``***`` (the user name stays when the
    userinfo is ``user:password``; a userinfo without ``:`` is hidden whole),
    and so does the value of every query parameter that names a secret
    (``password``, ``pass``, ``pwd``, ``secret``, ``token``, ``api_key``, ...;
    any case, percent-encoded or not) and any fragment. A string that cannot
    be taken apart without guessing (no ``scheme://``, blanks or control
    characters, an ``@`` after the host, which may be an unencoded ``/``, ``?``
    or ``#`` in a password) is never echoed: only its scheme is shown, if any.
    """
    if not isinstance(url, str):
        return f"<{type(url).__name__}, not a URL>"
    match = _SCHEME.match(url)
    if match is None:
        return UNPARSABLE_URL
    scheme, rest = match.group(1), url[match.end():]
    if any(c.isspace() or not c.isprintable() for c in rest):
        return f"{scheme}://{UNPARSABLE_URL}"
    userinfo = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        if any(c in userinfo for c in "/?#"):
            return f"{scheme}://{UNPARSABLE_URL}"
    rest, hash_, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    if question:
        query = "&".join(
            f"{piece.partition('=')[0]}=***"
            if "=" in piece and is_secret_param(piece.partition("=")[0]) else piece
            for piece in query.split("&"))
    shown = f"{scheme}://"
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        shown += f"{user}:***@" if colon else "***@"
    shown += rest + (question + query) + ("#***" if hash_ and fragment else hash_)
    return shown


class Settings:
    """Validated settings with attribute access (``app.conf.stream_batch_size``)."""

    def __init__(self, **settings: Any) -> None:
        values = {name: s.default for name, s in DEFAULTS.items()}
        for name, value in settings.items():
            values[name] = self._checked(name, value)
        object.__setattr__(self, "_values", values)

    @staticmethod
    def _checked(name: str, value: Any) -> Any:
        spec = DEFAULTS.get(name)
        if spec is None and name in UNSUPPORTED:
            warn_unsupported(name)
            return value
        if spec is None:
            import difflib
            close = difflib.get_close_matches(name, list(DEFAULTS) + list(UNSUPPORTED), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(f"unknown setting {name!r}{hint}")
        if spec.check is not None and not spec.check(value):
            if name in SECRET_NAMES or (name in URL_NAMES and not isinstance(value, str)):
                # Never the value: a secret of the wrong type is still a secret.
                kind = type(value).__name__
                if isinstance(value, tuple):
                    kind += f" of {len(value)} items"
                raise ConfigurationError(
                    f"setting {name!r} has a value of the wrong type "
                    f"({kind}; value not shown): {spec.doc}")
            shown = redact_url(value) if name in URL_NAMES and value else repr(value)
            raise ConfigurationError(f"setting {name!r} has an invalid value {shown}: {spec.doc}")
        return value

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise ConfigurationError(f"unknown setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._values[name] = self._checked(name, value)

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default`` when it is not a setting."""
        return self._values.get(name, default)

    def as_dict(self, *, redact: bool = True) -> Dict[str, Any]:
        """All settings; secrets shown as ``***`` unless ``redact=False``."""
        out = dict(self._values)
        if redact:
            for name in SECRET_NAMES:
                if out.get(name) is not None:
                    out[name] = "***"
            for name in URL_NAMES:
                out[name] = redact_url(out[name])
        return out

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"Settings({body})"

    @staticmethod
    def describe() -> str:
        """Every setting with its default and meaning (for docs and --help)."""
        return "\n".join(f"{name} = {s.default!r}\n    {s.doc}" for name, s in DEFAULTS.items())
