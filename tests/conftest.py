"""Shared fixtures. Real servers come from the plugins under tests/servers/."""
import logging
import os

import pytest

pytest_plugins = ["tests.servers.kafka", "tests.servers.redis"]

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_report_header(config):
    import sabot
    return (f"sabot fast path: {'cython' if sabot.fastpath_enabled() else 'pure-python'}"
            f" (SABOT_PURE_PYTHON={os.environ.get('SABOT_PURE_PYTHON', '')!r})")


@pytest.fixture
def quiet_sabot_logs():
    """Silence Sabot's loggers for a test: crash tests log tracebacks on purpose.

    Opt in with ``pytestmark = pytest.mark.usefixtures("quiet_sabot_logs")``.
    """
    logger = logging.getLogger("sabot")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def _fresh_delivery_failure_log():
    """Each test sees its first failed delivery logged (the log groups a
    kind of failure per interval, across the process)."""
    from sabot.agents import sinks
    sinks._failures._kinds.clear()
    yield
