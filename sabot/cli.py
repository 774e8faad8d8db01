"""The ``sabot`` command line (also ``python -m sabot`` and ``app.main()``).

``sabot -A module:app worker`` and ``sabot worker -A module:app`` both work.
Bad input (an -A that does not import, an object that is not an App, a bad
broker URL) prints one line naming the problem and exits non-zero.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
from typing import Any, Awaitable, Callable, Dict, List, Optional

import click

from .exceptions import SabotError
from .models import Record
from .models.codec import describe_error
from .models.conversion import is_record_type
from .models.json_layout import dumps as faust_json
from .types import AppT, ChannelT

__all__ = ["cli", "main", "load_app", "option", "argument", "run_with_app"]

#: For ``@app.command(option(...), argument(...))``, as ``faust.cli.option``.
option = click.option
argument = click.argument


def load_app(spec: str) -> AppT:
    """Import ``module:attribute`` (or ``module``, attribute ``app``) and check it is an App."""
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
    if not isinstance(obj, AppT):
        kind = type(obj).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise click.ClickException(f"-A {spec}: {attr!r} is {article} {kind}, not a sabot.App")
    try:
        obj.maybe_discover()  # autodiscover: agents and commands of other modules
    except SabotError as exc:
        raise click.ClickException(f"-A {spec}: {exc}") from None
    return obj


class _State:
    def __init__(self, app: Optional[AppT] = None, app_spec: Optional[str] = None,
                 loglevel: str = "info") -> None:
        self.app = app
        self.app_spec = app_spec
        self.loglevel = loglevel

    def get_app(self, spec: Optional[str]) -> AppT:
        if spec:
            return load_app(spec)
        if self.app is not None:
            return self.app
        return load_app(self.app_spec or os.environ.get("SABOT_APP", ""))


class _BindAddress(click.ParamType):
    """An IP address or host name to listen on (``--web-bind``)."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from .settings import valid_bind_address
        if not valid_bind_address(value):
            self.fail(f"{value!r} is not an IP address or host name "
                      f"(127.0.0.1, 0.0.0.0, ::1, localhost, ...)", param, ctx)
        return value


class _AppGroup(click.Group):
    """``sabot``'s commands, and those the app adds with ``@app.command``."""

    def _app_commands(self, ctx: click.Context, *, quiet: bool) -> Dict[str, Any]:
        from .commands import commands_of
        state = ctx.ensure_object(_State)
        spec = ctx.params.get("app_spec") or state.app_spec or os.environ.get("SABOT_APP", "")
        if state.app is None and not spec:
            return {}
        try:
            app = state.get_app(spec)
        except click.ClickException:
            if quiet:
                return {}
            raise
        return commands_of(app)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        found = self._app_commands(ctx, quiet=False).get(cmd_name)
        return found.click_command() if found is not None else None

    def list_commands(self, ctx: click.Context) -> List[str]:
        own = super().list_commands(ctx)
        return own + sorted(set(self._app_commands(ctx, quiet=True)) - set(own))


def _remember_app(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    # Eager, so that `sabot -A app --help` already knows the app's commands.
    if value:
        ctx.ensure_object(_State).app_spec = value
    return value


@click.group(cls=_AppGroup)
@click.option("-A", "--app", "app_spec", default=None, is_eager=True, callback=_remember_app,
              help="The app: module:attribute.")
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
@click.option("-b", "--web-bind", type=_BindAddress(), default=None,
              help="Address the web server listens on (default: the web_bind setting, "
                   "127.0.0.1; 0.0.0.0 for every interface).")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=None,
              help="Override every agent's concurrency.")
@click.option("--processes", type=click.IntRange(1, 256), default=None,
              help="Run this many worker processes, supervised by this one (default: the "
                   "worker_processes setting, 1). Child i serves its web pages on web port + i.")
@click.option("--worker-id", default=None,
              help="Stable name of this worker (its Redis consumer name; default: the worker_id "
                   "setting, else <host>-<pid>). With --processes, child i is <id>-<i>.")
@click.pass_obj
def worker(state: _State, app_spec: Optional[str], loglevel: Optional[str], json_logs: bool,
           web_port: Optional[int], web_bind: str | None, concurrency: Optional[int],
           processes: Optional[int], worker_id: Optional[str]) -> None:
    """Run the app's agents, tasks and timers until stopped."""
    from .worker import Worker
    app = state.get_app(app_spec)
    if worker_id is not None:
        try:
            app.conf.worker_id = worker_id
        except SabotError as exc:
            raise click.BadParameter(str(exc), param_hint="--worker-id") from None
    count = processes if processes is not None else int(app.conf.worker_processes)
    level = loglevel or state.loglevel
    if count > 1:
        from .supervisor import run_processes
        spec = app_spec or state.app_spec or os.environ.get("SABOT_APP", "")
        sys.exit(run_processes(app, count, spec=spec, loglevel=level, json_logs=json_logs,
                               web_port=web_port, web_bind=web_bind, concurrency=concurrency))
    code = Worker(app, loglevel=level, json_logs=json_logs,
                  web_port=web_port, web_bind=web_bind, concurrency=concurrency).execute()
    sys.exit(code)


@cli.command()
@click.option("-A", "--app", "app_spec", default=None, help="The app: module:attribute.")
@click.pass_obj
def agents(state: _State, app_spec: Optional[str]) -> None:
    """List the app's agents: input channel, transport, executor, concurrency, sinks."""
    app = state.get_app(app_spec)
    header = ("agent", "input", "transport", "executor", "concurrency", "sinks")
    rows = [(a.name, a.channel.name, a.channel.transport_name, a.executor, str(a.concurrency),
             ", ".join(_name_of(s) for s in a.sinks) or "-")
            for a in app.agents.values()]
    if not rows:
        click.echo(f"app {app.id!r} has no agents")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@cli.command()
@click.argument("topic")
@click.argument("value")
@click.option("-A", "--app", "app_spec", default=None, help="The app: module:attribute.")
@click.option("--key", default=None, help="Message key (a string).")
@click.option("--repeat", type=click.IntRange(1), default=1, show_default=True,
              help="Send the value this many times.")
@click.pass_obj
def send(state: _State, topic: str, value: str, app_spec: Optional[str], key: Optional[str],
         repeat: int) -> None:
    """Send VALUE to TOPIC (a topic or channel of the app) through its codec.

    VALUE is parsed as JSON when it is JSON (else sent as a string); for a
    ``raw`` topic it is sent as its UTF-8 bytes.
    """
    app = state.get_app(app_spec)
    channel = find_channel(app, topic)
    payload = parse_value(channel, value)

    async def go() -> None:
        await channel.maybe_declare()
        pending = []
        for _ in range(repeat):
            if _carries_batches(channel):  # parse_value gave the rows of one batch
                result = await channel.send_batch(payload)
            else:
                result = await channel.send(key=key, value=payload)
            if isinstance(result, asyncio.Future):
                pending.append(result)
        await channel.flush()
        if pending:
            await asyncio.gather(*pending)

    run_with_app(app, go)
    where = channel.transport_name
    if not channel.carries_bytes:
        click.echo(f"note: {topic!r} is an in-memory channel (memory://): the value reached only "
                   f"this `sabot send` process, not a running worker", err=True)
    click.echo(f"sent {repeat} value{'s' if repeat != 1 else ''} to {topic} [{where}]")


@cli.command()
@click.argument("topic")
@click.option("-A", "--app", "app_spec", default=None, help="The app: module:attribute.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest value kept.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Stop after this many values (default: run until Ctrl-C).")
@click.pass_obj
def tail(state: _State, topic: str, app_spec: Optional[str], from_beginning: bool,
         limit: Optional[int]) -> None:
    """Print TOPIC's values as they arrive, decoded, one per line.

    Reads outside the app's consumer group and commits nothing, so running
    workers are not disturbed.
    """
    from .tail import tail_values
    app = state.get_app(app_spec)
    channel = find_channel(app, topic)

    async def go() -> None:
        seen = 0
        values = tail_values(channel, from_beginning=from_beginning,
                             on_error=lambda line: click.echo(line, err=True))
        async with contextlib.aclosing(values):  # close the reader's client on --limit
            async for value in values:
                click.echo(_printable(value))
                seen += 1
                if limit is not None and seen >= limit:
                    return

    try:
        run_with_app(app, go)
    except KeyboardInterrupt:  # Ctrl-C is how an endless tail ends
        pass


#: Faust's text for a table made without ``help=``.
DEFAULT_TABLE_HELP = 'Missing description: use Table(.., help="str")'


def tabulate(rows: List[List[str]], headers: List[str], title: str) -> str:
    """A plain text table: a title line, the headers, the rows (columns aligned)."""
    table = [headers] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = [title, "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


@cli.command()
@click.option("-A", "--app", "app_spec", default=None, help="The app: module:attribute.")
@click.pass_obj
def tables(state: _State, app_spec: Optional[str]) -> None:
    """List the app's tables (Faust's ``tables``)."""
    app = state.get_app(app_spec)
    found = getattr(app, "tables", {}) or {}
    rows = [[t.name, getattr(t, "help", "") or DEFAULT_TABLE_HELP] for t in found.values()]
    click.echo(tabulate(rows, ["name", "help"], "Tables"))


def _models(builtins: bool) -> List[Any]:
    from .models import registry
    return [m for _, m in sorted(registry.items())
            if builtins or not m._options.namespace.startswith("@")]


def _first_line(text: Optional[str]) -> str:
    return (text or "<N/A>").strip().splitlines()[0] if (text or "").strip() else "<N/A>"


@cli.command()
@click.option("-A", "--app", "app_spec", default=None, help="The app: module:attribute.")
@click.option("--builtins/--no-builtins", default=False, help="Include Sabot's own models.")
@click.pass_obj
def models(state: _State, app_spec: Optional[str], builtins: bool) -> None:
    """List the Record models the app defines (Faust's ``models``)."""
    state.get_app(app_spec)  # importing the app defines its models
    rows = [[m._options.namespace, _first_line(m.__doc__)] for m in _models(builtins)]
    click.echo(tabulate(rows, ["name", "help"], "Models"))


@cli.command()
@click.argument("name")
@click.option("-A", "--app", "app_spec", default=None, help="The app: module:attribute.")
@click.pass_obj
def model(state: _State, name: str, app_spec: Optional[str]) -> None:
    """Show the fields of the model NAME (Faust's ``model``)."""
    import difflib
    state.get_app(app_spec)
    found = {m._options.namespace: m for m in _models(True)}
    short = {ns.rsplit(".", 1)[-1]: m for ns, m in found.items()}
    chosen = found.get(name) or short.get(name)
    if chosen is None:
        close = difflib.get_close_matches(name, list(found) + list(short), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise click.UsageError(f"No model {name!r}.{hint}")
    options = chosen._options
    rows = []
    for field, typ in options.fields.items():
        shown = getattr(typ, "__name__", None) if isinstance(typ, type) else None
        default = options.defaults.get(field, "*")
        rows.append([field, shown or repr(typ), "*" if default == "*" else repr(default)])
    click.echo(tabulate(rows, ["field", "type", "default"], options.namespace))


@cli.command()
@click.option("-A", "--app", "app_spec", default=None, help="The app: module:attribute.")
@click.pass_obj
def reset(state: _State, app_spec: Optional[str]) -> None:
    """Delete the local state of every table (Faust's ``reset``).

    The tables' changelogs are kept: a worker restores them from there.
    Run it while no worker of the app runs.
    """
    app = state.get_app(app_spec)
    found = getattr(app, "tables", None)
    if not found:
        click.echo("no tables")
        return
    for table in found.values():
        click.echo(f"Removing database for table {table.name}...")
        found.reset_state(table)


def find_channel(app: AppT, name: str) -> ChannelT:
    """The app's topic or channel called ``name`` (or its dead-letter channel)."""
    known: Dict[str, ChannelT] = {}
    for channel in app.channels:
        known.setdefault(channel.name, channel)
    for transport in app.transports:
        for topic_name, channel in transport.topics.items():
            known.setdefault(topic_name, channel)
    if name in known:
        return known[name]
    suffix = app.conf.dead_letter_suffix
    if name.endswith(suffix) and name[:-len(suffix)] in known:
        return known[name[:-len(suffix)]].dead_letter_channel()
    names = ", ".join(sorted(known)) or "none"
    raise click.ClickException(f"unknown topic {name!r}: app {app.id!r} has {names}")


def parse_value(channel: ChannelT, text: str) -> Any:
    """The value to send for the command-line ``text``.

    JSON when it parses (else the string itself); bytes for a ``raw`` codec;
    a list of rows for a batch codec (``arrow``), sent as one RecordBatch.
    """
    codec = channel.codec
    if codec is not None and codec.name == "raw":
        return text.encode("utf-8")
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if _carries_batches(channel):
        rows = value if isinstance(value, list) else [value]
        if not all(isinstance(r, dict) for r in rows):
            raise click.ClickException(
                f"topic {channel.name!r} carries Arrow batches: VALUE must be a JSON object "
                f"or a list of objects, got {text!r}")
        return rows
    if is_record_type(channel.value_type):  # checked here, not dead-lettered later
        try:
            return channel.value_type.from_data(value, preferred_type=channel.value_type)
        except Exception as exc:
            raise click.ClickException(
                f"VALUE does not fit topic {channel.name!r}: "
                f"{describe_error(channel.value_type, exc)}") from None
    return value


def _carries_batches(channel: ChannelT) -> bool:
    return channel.codec is not None and channel.codec.yields_batches


def run_with_app(app: AppT, fun: Callable[[], Awaitable[None]]) -> None:
    """Run ``fun()`` on a new loop, close the app's transports, map errors to one line."""
    async def go() -> None:
        with app.quieted():  # the transport says it once
            try:
                await fun()
            finally:
                for transport in app.transports:
                    try:
                        await transport.stop()
                    except Exception:  # already failing or done; the first error matters
                        pass
    try:
        asyncio.run(go())
    except SabotError as exc:
        lines = str(exc).strip().splitlines()
        raise click.ClickException(lines[0] if lines else type(exc).__name__) from None
    except (TypeError, ValueError) as exc:  # a value the channel refuses (SchemaError, ...)
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


def _name_of(target: Any) -> str:
    # A sink as given: a channel or agent has a name, a callable a qualname.
    return getattr(target, "name", None) or getattr(target, "__qualname__", None) or repr(target)


def _printable(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return repr(bytes(value))
    if isinstance(value, str):
        return value
    if isinstance(value, Record):  # a typed topic's value, as Faust writes it
        return faust_json(value).decode("utf-8")
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


def main(argv: Optional[List[str]] = None, app: Optional[AppT] = None) -> None:
    """Entry point of ``sabot``; ``app`` preloads the app for ``app.main()``."""
    cli.main(args=argv, obj=_State(app=app), prog_name="sabot")


if __name__ == "__main__":  # pragma: no cover
    main()
