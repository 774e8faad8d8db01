"""The ``sabot`` command line (also ``python -m sabot`` and ``app.main()``).

``sabot -A module:app worker`` and ``sabot worker -A module:app`` both work.
Bad input (an -A that does not import, an object that is not an App, a bad
broker URL) prints one line naming the problem and exits non-zero.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, List, Optional

import click

from .exceptions import SabotError

__all__ = ["cli", "main", "load_app"]


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (or ``module``, attribute ``app``) and check it is an App."""
    from .app import App
    if not spec:
        raise click.UsageError("no app given: use -A module:app (or set SABOT_APP)")
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.ClickException(f"-A {spec}: no module named {module_name!r}") from None
        raise click.ClickException(f"-A {spec}: importing {module_name!r} failed: {exc}") from None
    except SabotError as exc:
        raise click.ClickException(f"-A {spec}: {exc}") from None
    except Exception as exc:
        raise click.ClickException(
            f"-A {spec}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise click.ClickException(f"-A {spec}: module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, App):
        raise click.ClickException(f"-A {spec}: {attr!r} is a {type(obj).__name__}, not a sabot.App")
    return obj


class _State:
    def __init__(self, app: Any = None, app_spec: Optional[str] = None,
                 loglevel: str = "info") -> None:
        self.app = app
        self.app_spec = app_spec
        self.loglevel = loglevel

    def get_app(self, spec: Optional[str]) -> Any:
        if spec:
            return load_app(spec)
        if self.app is not None:
            return self.app
        return load_app(self.app_spec or os.environ.get("SABOT_APP", ""))


@click.group()
@click.option("-A", "--app", "app_spec", default=None, help="The app: module:attribute.")
@click.option("-l", "--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.version_option(package_name="sabot")
@click.pass_context
def cli(ctx: click.Context, app_spec: Optional[str], loglevel: str) -> None:
    """Sabot: streaming agents on Apache Arrow."""
    state = ctx.ensure_object(_State)
    state.app_spec = app_spec or state.app_spec
    state.loglevel = loglevel


@cli.command()
@click.option("-A", "--app", "app_spec", default=None, help="The app: module:attribute.")
@click.option("-l", "--loglevel", default=None,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--json-logs", is_flag=True, help="Log one JSON object per line.")
@click.option("--web-port", type=click.IntRange(1, 65535), default=None,
              help="Serve /metrics and /health on this port (off by default).")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=None,
              help="Override every agent's concurrency.")
@click.pass_obj
def worker(state: _State, app_spec: Optional[str], loglevel: Optional[str], json_logs: bool,
           web_port: Optional[int], concurrency: Optional[int]) -> None:
    """Run the app's agents, tasks and timers until stopped."""
    from .worker import Worker
    app = state.get_app(app_spec)
    code = Worker(app, loglevel=loglevel or state.loglevel, json_logs=json_logs,
                  web_port=web_port, concurrency=concurrency).execute()
    sys.exit(code)


def main(argv: Optional[List[str]] = None, app: Any = None) -> None:
    """Entry point of ``sabot``; ``app`` preloads the app for ``app.main()``."""
    cli.main(args=argv, obj=_State(app=app), prog_name="sabot")


if __name__ == "__main__":  # pragma: no cover
    main()
