"""Shared fixtures. Real servers come from the plugins under tests/servers/."""
import os


pytest_plugins = ["tests.servers.kafka", "tests.servers.redis"]

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_report_header(config):
    import sabot
    return (f"sabot fast path: {'cython' if sabot.fastpath_enabled() else 'pure-python'}"
            f" (SABOT_PURE_PYTHON={os.environ.get('SABOT_PURE_PYTHON', '')!r})")


