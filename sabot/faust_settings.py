"""Faust's app settings that Sabot accepts without having the feature behind them.

A Faust app passes its settings to ``sabot.App`` unchanged. Every setting
Faust has is one of:

* a Sabot setting with Faust's meaning (``sabot.settings.DEFAULTS``);
* one of the names below: accepted, kept in ``app.conf`` (``conf.get(name)``),
  and warned about once per app with a ``SabotCompatibilityWarning`` that
  names it and says what Sabot does instead. Never refused, never silently
  ignored.

A name in neither list is a typo and is refused with the closest match.
"""
from __future__ import annotations

import warnings
from typing import Dict

from .exceptions import SabotCompatibilityWarning

__all__ = ["UNSUPPORTED", "warn_unsupported"]

#: Faust setting -> what Sabot does instead (shown in the warning).
UNSUPPORTED: Dict[str, str] = {
    # Faust's class overrides: Sabot's own classes are used.
    **{name: f"Sabot's own {name} class is used" for name in (
        "Agent", "ConsumerScheduler", "Event", "GlobalTable", "HttpClient", "LeaderAssignor",
        "Monitor", "PartitionAssignor", "Router", "Schema", "Serializers", "SetGlobalTable",
        "SetTable", "Stream", "Table", "TableManager", "Topic", "Worker")},
    "aerospike_retries_on_exception": "no aerospike store",
    "aerospike_sleep_seconds_between_retries_on_exception": "no aerospike store",
    "crash_app_on_aerospike_exception": "no aerospike store",
    "blocking_timeout": "no blocking detector",
    "cython_optimizations": "Sabot's Cython fast path is chosen at import (SABOT_PURE_PYTHON=1 "
                            "turns it off)",
    "recovery_consistency_check": "recovery reads the changelog to its end",
    "store_check_exists": "stores are created when missing",
    "agent_supervisor": "agents restart with Sabot's own backoff (agent_restart_backoff)",
    "broker_consumer": "one broker URL serves producing and consuming (broker)",
    "broker_producer": "one broker URL serves producing and consuming (broker)",
    "broker_api_version": "aiokafka negotiates the protocol version",
    "consumer_api_version": "aiokafka negotiates the protocol version",
    "producer_api_version": "aiokafka negotiates the protocol version",
    "broker_commit_every": "offsets are committed every broker_commit_interval seconds, "
                           "not every N messages",
    "broker_commit_livelock_soft_timeout": "no livelock detection; in-flight batches are "
                                           "reported by the status line",
    "cache": "no cache backend (app.Table keeps state)",
    "debug": "no debug endpoints; use -l debug for logs",
    "env": "settings are not read from the environment",
    "env_prefix": "settings are not read from the environment",
    "id_format": "a version > 1 names the app '<id>-v<version>', as Faust's default format",
    "logging_config": "configure logging with -l/--json-logs or Python's logging",
    "loghandlers": "configure logging with -l/--json-logs or Python's logging",
    "producer_partitioner": "keys are partitioned by aiokafka's default (murmur2, as Kafka's)",
    "producer_threaded": "the producer runs on the worker's event loop",
    "reply_create_topic": "the reply topic is declared like other topics (topic_allow_declare)",
    "reply_expires": "the reply topic gets the broker's default retention",
    "stream_processing_timeout": "no per-value processing timeout",
    "stream_publish_on_commit": "sinks publish as values are processed",
    "stream_recovery_delay": "agents start when their tables have recovered",
    "stream_wait_empty": "a graceful stop waits for in-flight batches (shutdown_timeout)",
    "stream_ack_cancelled_tasks": "a value is acknowledged once its batch is done",
    "stream_ack_exceptions": "a value that raises goes to the dead-letter channel "
                             "(on_error='dead_letter')",
    "tabledir": "table stores live under datadir/<app id>",
    "table_key_index_size": "tables have no key index cache",
    "topic_disable_leader": "the leader topic exists only when is_leader() or on_leader is used",
    "url": "use broker=",
    "web": "the web server is Sabot's own",
    "web_application_options": "the web server is Sabot's own",
    "web_cors_options": "no CORS headers",
    "web_graph_enabled": "no graph endpoint",
    "web_in_thread": "the web server runs on the worker's event loop",
    "web_metrics_enabled": "/metrics is always served when the web server runs",
    "web_router_enabled": "no table router endpoints yet",
    "web_ssl_context": "the web server speaks plain HTTP (put a TLS proxy in front)",
    "web_stats_enabled": "/metrics is always served when the web server runs",
    "web_tables_enabled": "no table endpoints yet",
    "web_transport": "the web server listens on TCP (web_bind, web_port)",
    "worker_redirect_stdouts": "the worker does not redirect stdout",
    "worker_redirect_stdouts_level": "the worker does not redirect stdout",
}


def warn_unsupported(name: str, *, stacklevel: int = 4) -> None:
    """Warn that Faust's setting ``name`` has no effect in Sabot, and why."""
    warnings.warn(f"Faust setting {name!r} is not supported by Sabot and has no effect: "
                  f"{UNSUPPORTED[name]}", SabotCompatibilityWarning, stacklevel=stacklevel)
