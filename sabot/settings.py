"""App settings: one table of names, defaults, checks and documentation.

``App(id, **settings)`` validates every name against ``DEFAULTS``: an unknown
name or a value of the wrong kind raises ``ConfigurationError`` naming it.
Secrets (passwords, SSL contexts) never appear in ``repr``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional
from urllib.parse import urlsplit

from .exceptions import ConfigurationError

__all__ = ["Settings", "DEFAULTS", "SECRET_NAMES", "redact_url"]


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
    "redis_url": Setting("redis://127.0.0.1:6379/0", _str,
                         "Redis server for app.redis_channel(); redis:// or rediss://, with user, password, db."),
    "broker_commit_interval": Setting(2.0, _positive_number,
                                      "Seconds between offset commits (Kafka)."),
    "broker_connect_timeout": Setting(10.0, _positive_number,
                                      "Seconds to reach the broker at start before failing with a clear error."),
    "broker_credentials": Setting(None, _any,
                                  "Credentials for the broker (an SSL context or a SASL description)."),
    "ssl_context": Setting(None, _any, "ssl.SSLContext for TLS connections to the broker."),
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
    "topic_partitions": Setting(4, _positive_int, "Partitions of topics the app creates."),
    "consumer_auto_offset_reset": Setting("earliest", lambda v: v in ("earliest", "latest"),
                                          "Where a consumer group with no committed position starts."),
    "dead_letter_suffix": Setting(".dlq", _str, "Suffix of dead-letter channels: <name><suffix>."),
    "redis_claim_idle_ms": Setting(30000, _positive_int,
                                   "Pending Redis entries idle this long are claimed from dead consumers."),
    "redis_block_ms": Setting(100, _positive_int, "XREADGROUP BLOCK time in milliseconds."),
    "shutdown_timeout": Setting(30.0, _positive_number,
                                "Seconds a graceful stop waits for in-flight batches."),
    "status_interval": Setting(10.0, _positive_number, "Seconds between worker status lines."),
    "agent_restart_backoff": Setting(0.1, _non_negative_number,
                                     "First delay before restarting an agent that crashed without progress."),
}

#: Names whose values are secrets: never shown in repr or logs.
SECRET_NAMES = frozenset({"sasl_password", "broker_credentials", "ssl_context"})


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and banners)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


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
        if spec is None:
            import difflib
            close = difflib.get_close_matches(name, DEFAULTS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(f"unknown setting {name!r}{hint}")
        if spec.check is not None and not spec.check(value):
            raise ConfigurationError(
                f"setting {name!r} has an invalid value {value!r}: {spec.doc}")
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
            for name in ("broker", "redis_url"):
                out[name] = redact_url(out[name])
        return out

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"Settings({body})"

    @staticmethod
    def describe() -> str:
        """Every setting with its default and meaning (for docs and --help)."""
        return "\n".join(f"{name} = {s.default!r}\n    {s.doc}" for name, s in DEFAULTS.items())
