"""``App``: the registry of channels, topics, agents, tasks and timers.

The app wires and delegates: channels come from ``sabot.channels``, agents
from ``sabot.agents``, the broker's ``Transport`` from the URL's scheme. It is
a ``mode.Service``; ``sabot.worker.Worker`` runs it.

Start order: agents subscribe to their channels first, then transports start
fetching (so no fetched batch finds nobody), then tasks and timers run. Stop
order: tasks and timers, transports stop fetching and commit what finished,
agents stop, transports close (flushing producers).
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import logging
import sys
import types
import warnings
from typing import (TYPE_CHECKING, Any, Callable, Concatenate, Dict, Generic, Iterator, List,
                    Mapping, Optional, ParamSpec, Sequence, Set, Type, TypeVar, Union, overload)

from mode import Service

from .agents import Agent
from .agents.faust_options import FaustAgentOptions
from .agents.rpc import ReplyConsumer
from .agents.sinks import SinkTarget
from .channels import (Channel, MemoryChannel, Transport, create_transport, scheme_of,
                       transport_class)
from .commands import AppCommand
from .discovery import django_modules, import_modules
from .exceptions import ConfigurationError, SabotCompatibilityWarning
from .models.codec import warn_if_types_differ
from .leader import LeaderElection, election_for
from .signals import AppSignals, RebalanceSignals
from .durations import want_seconds
from .schedules import Crontab, Interval, Schedule, _takes_argument
from .settings import Settings, redact_url
from .tables.manager import TableManager
from .tables.table import GlobalTable, SetGlobalTable, SetTable, Table
from .types import ChannelT

if TYPE_CHECKING:
    from .web.routes import Route
    from .web.views import View

__all__ = ["App"]

logger = logging.getLogger("sabot.app")

_S = TypeVar("_S")
_P = ParamSpec("_P")
_R = TypeVar("_R")


class _AppDecorator(Generic[_S, _P, _R]):
    """``app.task``/``app.timer``: Faust's decorators on an app, mode's on the class.

    ``mode.Service`` has class-level ``task`` and ``timer`` decorators for
    methods of a service class (``@Service.timer(1.0)``; mode's ``timer``
    calls ``cls.task``). Faust's API has instance-level ones of the same
    names for plain functions. Read from the class this gives mode's (an App
    subclass is still a Service), read from an app it gives the app's.
    """

    __slots__ = ("_service", "_app")

    def __init__(self, service: _S, app: Callable[Concatenate[App, _P], _R]) -> None:
        self._service = service
        self._app = app

    @overload
    def __get__(self, obj: None, owner: type) -> _S: ...
    @overload
    def __get__(self, obj: App, owner: type) -> Callable[_P, _R]: ...

    def __get__(self, obj: Optional[App], owner: type) -> Any:
        if obj is None:
            return self._service
        return types.MethodType(self._app, obj)


class App(Service):
    """A Sabot application: ``App(id, broker="memory://", **settings)``."""

    #: mode logs every start/stop at this level; a worker has many services.
    #: Our own logger, set before mode would give the module a NullHandler
    #: (which silences a script's errors when it configured no logging).
    logger = logger
    mundane_level = "debug"


    def __init__(self, id: str, broker: str = "memory://", **settings: Any) -> None:
        if not isinstance(id, str) or not id:
            raise ConfigurationError(f"app id must be a non-empty string, got {id!r}")
        self.conf = Settings(broker=broker, **settings)
        #: As Faust's default ``id_format``: a new version is a new, isolated app.
        self.id = id if self.conf.version == 1 else f"{id}-v{self.conf.version}"
        # Faust's ProcessingGuarantee enum or its value: kept as the value.
        self.conf.processing_guarantee = getattr(self.conf.processing_guarantee, "value",
                                                 self.conf.processing_guarantee)
        # "exactly_once": Kafka transactions (sabot/channels/kafka_eos.py) and
        # Redis-to-Redis atomic commits (redis_eos.py); docs/exactly-once.md.
        if self.conf.origin is None:
            # Faust's origin: the module that made the app, for autodiscover.
            caller = sys._getframe(1).f_globals.get("__name__")
            self._origin: Optional[str] = caller if caller != "__main__" else None
        else:
            self._origin = self.conf.origin
        self._discovered = False
        scheme_of(self.conf.broker)  # an unknown scheme fails here, not at start
        self.agents: Dict[str, Agent] = {}
        self.channels: List[Channel] = []
        self._transports: Dict[type, Transport] = {}
        # Not _tasks/_timers: mode.Service keeps its own @Service.task registry in _tasks.
        self._app_tasks: List[Callable[..., Any]] = []
        #: ``@app.timer`` and ``@app.crontab`` functions (sabot.schedules).
        self.schedules: List[Schedule] = []
        #: ``@app.command`` subcommands by name (sabot.commands).
        self.commands: Dict[str, AppCommand] = {}
        self._election: Optional[LeaderElection] = None
        self._replies: Optional[ReplyConsumer] = None
        #: ``@app.task(on_leader=True)`` functions.
        self._leader_tasks: Set[Callable[..., Any]] = set()
        #: Faust's signals (sabot.signals): app.on_rebalance_complete.connect, ...
        self._signals = AppSignals(self)
        self.on_partitions_assigned = self._signals.on_partitions_assigned
        self.on_partitions_revoked = self._signals.on_partitions_revoked
        self.on_rebalance_complete = self._signals.on_rebalance_complete
        self.on_before_shutdown = self._signals.on_before_shutdown
        self.on_worker_init = self._signals.on_worker_init
        #: True from a partition revoke until the next assignment is ready (Kafka).
        self.rebalancing = False
        self.rebalancing_count = 0
        #: ``@app.service`` classes (or instances), started with the app.
        self._service_types: List[Any] = []
        self._services_running: List[Service] = []
        self._futures_running: List["asyncio.Future[Any]"] = []
        self._stop_event: Optional[asyncio.Event] = None
        self.crash_reasons: List[BaseException] = []
        #: The app's tables by name (Faust's ``app.tables``): recovery, flushes.
        self.tables = TableManager(self)
        #: ``@app.page`` views, served by the worker's web server (``sabot.web``).
        self.web_routes: List["Route"] = []
        #: ``serve_asgi(app, asgi_app)``: what the worker serves instead of the pages.
        self.web_asgi: Any = None
        super().__init__()

    def __repr__(self) -> str:
        return f"<App {self.id!r} broker={redact_url(self.conf.broker)!r} agents={len(self.agents)}>"

    @property
    def label(self) -> str:
        return f"App: {self.id}"

    # -- transports ------------------------------------------------------------
    def _transport_for(self, url: str) -> Transport:
        # One transport per kind of broker: the first URL given for it wins
        # (the broker's, since ``transport`` is asked for first).
        cls = transport_class(url)
        transport = self._transports.get(cls)
        if transport is None:
            transport = create_transport(self, url)
            self._transports[cls] = transport
        return transport

    @property
    def transport(self) -> Transport:
        """The broker's transport (memory, Kafka or Redis) for ``app.topic``."""
        return self._transport_for(self.conf.broker)

    @property
    def transports(self) -> List[Transport]:
        """Every transport the app uses (the broker's, and Redis if asked for)."""
        return list(self._transports.values())

    @contextlib.contextmanager
    def quieted(self) -> Iterator[None]:
        """Silence the client libraries whose errors the transports report in one line."""
        with contextlib.ExitStack() as stack:
            for transport in self.transports:
                stack.enter_context(transport.quieted())
            yield

    # -- channels --------------------------------------------------------------
    def channel(self, schema: Any = None, maxsize: Optional[int] = None, *,
                name: Optional[str] = None, **kwargs: Any) -> Channel:
        """A new in-memory channel (optionally with an Arrow ``schema``)."""
        channel = MemoryChannel(self, name, schema=schema, maxsize=maxsize, **kwargs)
        self.channels.append(channel)
        return channel

    def topic(self, name: str, **options: Any) -> Channel:
        """The broker's channel called ``name`` (a Kafka topic on ``kafka://``)."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"topic name must be a non-empty string, got {name!r}")
        return self.transport.topic(name, **self._serializers(options))

    def redis_channel(self, name: str, **options: Any) -> Channel:
        """A channel over the Redis Stream ``name`` (``conf.redis_url``)."""
        # With a redis:// broker the broker's transport serves it.
        self.transport  # noqa: B018 - created first, so it is the one kept
        return self._transport_for(self.conf.redis_url).topic(name, **self._serializers(options))

    def _serializers(self, options: Dict[str, Any]) -> Dict[str, Any]:
        # The app's key_serializer and value_serializer, where the topic names
        # none and its model has none (Faust's order: topic, model, app).
        for name, typ in (("key_serializer", "key_type"), ("value_serializer", "value_type")):
            model_options = getattr(options.get(typ), "_options", None)
            if getattr(model_options, "serializer", None):
                continue
            if options.get(name) is None and self.conf.get(name) is not None:
                options[name] = self.conf.get(name)
        return options

    def discover(self, *packages: str) -> List[str]:
        """Import the app's modules so that their agents, tasks and commands register.

        Faust's ``autodiscover``: with no argument, the packages of the
        ``autodiscover`` setting (True: ``origin``, the package that made
        the app, and with ``DJANGO_SETTINGS_MODULE`` set, Django's installed
        apps, Django set up first, as Faust's Django fixup). Every module of each package is imported once; the names
        imported are returned. A module that fails to import fails with its
        name.
        """
        if not packages:
            setting = self.conf.autodiscover
            if setting is False:
                return []
            if callable(setting):
                setting = setting()
            if setting is True:
                if not self._origin:
                    raise ConfigurationError(
                        "autodiscover=True needs origin= (the package to scan): the app was "
                        "made in __main__")
                # and, in a Django project, its installed apps (Faust's Django fixup)
                origin = self._origin.split(".")[0]
                packages = (origin, *(m for m in django_modules() if m != origin))
            else:
                packages = tuple(setting)
        return import_modules(packages)

    def maybe_discover(self) -> None:
        """``discover()`` once, if the ``autodiscover`` setting asks for it."""
        if not self._discovered and self.conf.autodiscover is not False:
            self._discovered = True
            self.discover()

    def all_channels(self) -> List[Channel]:
        """Every channel the app made: ``app.channel()`` ones and every topic."""
        seen = {id(c): c for c in self.channels}
        for transport in self._transports.values():
            for channel in transport.topics.values():
                seen.setdefault(id(channel), channel)
        return list(seen.values())

    def dead_letter_channel_for(self, channel: ChannelT, name: str) -> Channel:
        """The dead-letter channel of ``channel``: same transport, ``name``."""
        for transport in self._transports.values():
            if transport.topics.get(channel.name) is channel:
                return transport.topic(name)
        return self._transport_for("memory://").topic(name)

    # -- tables ------------------------------------------------------------------
    def Table(self, name: str, *, default: Optional[Callable[[], Any]] = None,
              **kwargs: Any) -> Table:
        """A partitioned, changelogged key/value table (Faust's ``app.Table``)."""
        return self.tables.add(Table(self, name, default=default, **kwargs))  # type: ignore[return-value]

    def GlobalTable(self, name: str, *, default: Optional[Callable[[], Any]] = None,
                    **kwargs: Any) -> GlobalTable:
        """A table every worker holds whole (Faust's ``app.GlobalTable``)."""
        return self.tables.add(GlobalTable(self, name, default=default, **kwargs))  # type: ignore[return-value]

    def SetTable(self, name: str, **kwargs: Any) -> SetTable:
        """A table of sets: ``table[k].add(x)`` (Faust's ``app.SetTable``)."""
        return self.tables.add(SetTable(self, name, **kwargs))  # type: ignore[return-value]

    def SetGlobalTable(self, name: str, **kwargs: Any) -> SetGlobalTable:
        """A SetTable every worker holds whole (Faust's ``app.SetGlobalTable``)."""
        return self.tables.add(SetGlobalTable(self, name, **kwargs))  # type: ignore[return-value]

    # -- agents, tasks, timers ----------------------------------------------
    def agent(self, channel: Union[None, str, Channel, Agent] = None, *,
              name: Optional[str] = None, concurrency: int = 1,
              sink: Optional[Sequence[SinkTarget]] = None, executor: str = "native",
              on_error: Union[str, Callable[..., Any]] = "dead_letter",
              node: Any = None, key_type: Any = None,
              value_type: Any = None, help: Optional[str] = None, schema: Any = None,
              supervisor_strategy: Any = None, isolated_partitions: bool = False,
              use_reply_headers: bool = False,
              **kwargs: Any) -> Callable[[Callable[..., Any]], Agent]:
        """Decorate an async function to run it over ``channel``.

        ``channel`` is a channel, a topic name, another agent (its input) or
        ``None`` for a new in-memory channel. ``key_type``/``value_type``
        (Faust's) type the channel the agent makes. ``executor="wasm"`` runs the
        WebAssembly ``node`` (a path, bytes, text or ``WasmModule``) on
        every batch; the function iterates the node's outputs. Faust's other
        options (``on_error`` as a handler, ``schema``, ``help``, ...) as in
        ``sabot.agents.faust_options``.
        """
        def decorator(fun: Callable[..., Any]) -> Agent:
            agent_name = name or f"{fun.__module__}.{fun.__qualname__}"
            if agent_name in self.agents:
                raise ConfigurationError(f"agent {agent_name!r} is defined twice")
            faust = FaustAgentOptions(agent_name, on_error=on_error, schema=schema,
                                      supervisor_strategy=supervisor_strategy,
                                      isolated_partitions=isolated_partitions,
                                      use_reply_headers=use_reply_headers, extra=kwargs)
            source: ChannelT
            key_t, value_t = faust.types(key_type, value_type)
            types = dict(key_type=key_t, value_type=value_t,
                         **{k: v for k, v in faust.schema_options.items() if k.endswith("serializer")})
            if channel is None:
                # As Faust: a topic on the app's broker, "<app id>-<agent name>".
                source = self.topic(f"{self.id}-{agent_name}", **types)
            elif isinstance(channel, str):
                source = self.topic(channel, **types)
            elif isinstance(channel, Agent):
                source = channel.channel
            elif isinstance(channel, Channel):
                source = channel
            else:
                raise ConfigurationError(
                    f"agent {agent_name!r}: channel must be a channel, a topic name or an agent, "
                    f"got {type(channel).__name__}")
            warn_if_types_differ(agent_name, source, key_t, value_t)
            agent = Agent(fun, app=self, channel=source, name=agent_name,
                          concurrency=concurrency, sink=sink, executor=executor,
                          on_error=faust.policy, node=node)
            agent.help = help or ""
            agent.use_reply_headers = use_reply_headers  # Faust's: the form of its requests
            agent.on_failure = faust.failure_hook(agent)
            self.agents[agent_name] = agent
            return agent
        return decorator

    def _task(self, fun: Optional[Callable[..., Any]] = None, *, on_leader: bool = False,
              traced: bool = True) -> Any:
        """Run ``fun()`` (or ``fun(app)``) once the worker has started (Faust's ``app.task``).

        ``on_leader=True``: only on the leader worker, once the election has
        answered (within twice ``broker_session_timeout``; else skipped with
        a log line). ``traced`` is Faust's and changes nothing here.
        """
        def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
            if not inspect.iscoroutinefunction(f):
                raise ConfigurationError(f"task {f.__qualname__!r} must be an async function")
            self._app_tasks.append(f)
            if on_leader:
                self._leader_tasks.add(f)
            return f
        return decorator(fun) if fun is not None else decorator

    def _timer(self, interval: Union[float, datetime.timedelta], on_leader: bool = False,
               traced: bool = True, name: Optional[str] = None,
               max_drift_correction: float = 0.1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Run the decorated async function every ``interval`` seconds (Faust's ``app.timer``).

        ``on_leader=True`` runs it only on the leader worker (``app.is_leader()``).
        ``traced`` and ``max_drift_correction`` are Faust's and change nothing
        here: beats keep a fixed grid (``sabot.schedules``).
        """
        seconds = want_seconds(interval, "timer interval")

        def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
            self.schedules.append(Interval(f, seconds, on_leader=on_leader, name=name))
            return f
        return decorator

    def _crontab(self, cron_format: str, *, timezone: Optional[datetime.tzinfo] = None,
                on_leader: bool = False, traced: bool = True,
                tz: Optional[datetime.tzinfo] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Run the decorated async function at the times of ``cron_format`` (Faust's ``app.crontab``).

        ``timezone`` defaults to the app's ``timezone`` setting (UTC).
        """
        def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
            # ``tz`` is Faust 1.x's name for ``timezone`` (its examples still use it).
            self.schedules.append(Crontab(f, cron_format, timezone or tz or self.conf.timezone,
                                          on_leader=on_leader))
            return f
        return decorator

    def service(self, cls: Any) -> Any:
        """Start the decorated ``mode.Service`` class with the app, stop it with it (Faust's)."""
        if not (isinstance(cls, Service) or (isinstance(cls, type) and issubclass(cls, Service))):
            raise ConfigurationError(f"app.service: {cls!r} is not a mode.Service class or instance")
        self._service_types.append(cls)
        return cls

    @property
    def replies(self) -> ReplyConsumer:
        """Where ``agent.ask`` replies arrive (``sabot.agents.rpc``)."""
        if self._replies is None:
            self._replies = ReplyConsumer(self)
        return self._replies

    def is_leader(self) -> bool:
        """True on the worker that leads the app (``sabot.leader``: Kafka's group, a Redis lock)."""
        if self._election is None:
            self._election = election_for(self)
            if self.started:  # asked first at run time: join now
                self._futures_running.append(asyncio.ensure_future(self._election.start()))
        return self._election.is_leader()

    def command(self, *options: Callable[[Any], Any], name: Optional[str] = None,
                help: Optional[str] = None, base: Any = None,
                **kwargs: Any) -> Callable[[Callable[..., Any]], AppCommand]:
        """Add a subcommand to ``sabot -A app ...`` and ``python app.py ...`` (Faust's ``app.command``).

        ``options`` are ``sabot.cli.option(...)`` and ``sabot.cli.argument(...)``.
        """
        if base is not None or kwargs:
            unsupported = ["base"] * (base is not None) + sorted(kwargs)
            warnings.warn(f"app.command: Faust's {', '.join(unsupported)} not supported by Sabot "
                          f"(ignored)", SabotCompatibilityWarning, stacklevel=2)

        def decorator(f: Callable[..., Any]) -> AppCommand:
            command = AppCommand(self, f, options, name=name, help=help)
            if command.name in self.commands:
                raise ConfigurationError(f"app command {command.name!r} is defined twice")
            self.commands[command.name] = command
            return command
        return decorator

    # -- web ---------------------------------------------------------------------
    def page(self, path: str, *, base: Optional[Type["View"]] = None,
             cors_options: Optional[Mapping[str, Any]] = None,
             name: Optional[str] = None) -> Callable[[Any], Type["View"]]:
        """Serve the decorated ``web.View`` class or ``async def`` handler at ``path`` (Faust's ``app.page``)."""
        from .web.routes import page_decorator
        from .web.views import View
        return page_decorator(self.web_routes, path, base=base or View, name=name,
                              cors_options=cors_options)

    def table_route(self, table: Any, shard_param: Optional[str] = None, *,
                    query_param: Optional[str] = None, match_info: Optional[str] = None,
                    exact_key: Optional[str] = None) -> Callable[[Any], Any]:
        """Decorate a view method to answer where ``table`` holds the key (``sabot.web.routing``)."""
        from .web.routing import route_decorator
        return route_decorator(self, table, "table", shard_param, query_param, match_info,
                               exact_key)

    def topic_route(self, topic: Any, shard_param: Optional[str] = None, *,
                    query_param: Optional[str] = None, match_info: Optional[str] = None,
                    exact_key: Optional[str] = None) -> Callable[[Any], Any]:
        """Decorate a view method to answer where ``topic``'s key partition is read (``sabot.web.routing``)."""
        from .web.routing import route_decorator
        return route_decorator(self, topic, "topic", shard_param, query_param, match_info,
                               exact_key)

    #: ``@app.task``: run the function once the worker has started (Faust's API).
    task = _AppDecorator(Service.task, _task)
    #: ``@app.timer(seconds)``: run the function every ``seconds`` (Faust's API).
    #: mypy compares what an *instance* gets with mode's classmethod, which is
    #: only ever used on a class (``@Service.timer`` in a class body, ``cls.task``
    #: inside it) and which ``App.timer`` still is: typing cannot say
    #: "class-only", so the app's own ``timer(seconds) -> decorator`` differs.
    timer = _AppDecorator(Service.timer, _timer)  # type: ignore[assignment]
    #: ``@app.crontab(cron_format, timezone=, on_leader=)`` (Faust's API); on the
    #: class it is still mode's ``Service.crontab``, for the same reason.
    crontab = _AppDecorator(Service.crontab, _crontab)  # type: ignore[assignment]

    # -- lifecycle -------------------------------------------------------------
    async def on_start(self) -> None:
        self._stop_requested()  # bind the event to this loop
        for channel in self.channels:
            await channel.maybe_start()
        await self.tables.start()  # recovered before any agent reads
        if self.transport.assigns_partitions and self._signals.connected(self):
            # After the tables' listener: "assigned" means recovered too.
            self.transport.add_assignment_listener(RebalanceSignals(self))
        for agent in self.agents.values():
            await agent.maybe_start()
        if self._election is None and (any(s.on_leader for s in self.schedules)
                                       or self._leader_tasks):
            self._election = election_for(self)  # its transport must start below
        for transport in list(self._transports.values()):
            await transport.maybe_start()
        for service in self._service_types:
            instance = service() if isinstance(service, type) else service
            await instance.start()
            self._services_running.append(instance)
        if not self.transport.assigns_partitions:
            await self.on_rebalance_complete.send()  # nothing to assign: ready now
        for fun in self._app_tasks:
            self._futures_running.append(asyncio.ensure_future(self._run_task(fun)))
        if self._election is not None:
            await self._election.start()
        for schedule in self.schedules:
            self._futures_running.append(asyncio.ensure_future(schedule.run(self)))

    async def _run_task(self, fun: Callable[..., Any]) -> None:
        if fun in self._leader_tasks and not await self._becomes_leader():
            logger.info("task %s not run: this worker is not the leader", fun.__qualname__)
            return
        try:
            await (fun(self) if _takes_argument(fun) else fun())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("task %s crashed: %r", fun.__qualname__, exc)
            self.report_crash(exc)

    async def _becomes_leader(self) -> bool:
        """Whether this worker leads, waiting (bounded) for the election to answer."""
        deadline = asyncio.get_running_loop().time() + 2 * self.conf.broker_session_timeout
        while not self.is_leader():
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def on_stop(self) -> None:
        await self.on_before_shutdown.send()
        for fut in self._futures_running:
            fut.cancel()
        if self._futures_running:
            await asyncio.gather(*self._futures_running, return_exceptions=True)
        self._futures_running.clear()
        if self._election is not None:
            await self._election.stop()
        if self._replies is not None:
            await self._replies.stop()
        while self._services_running:
            await self._services_running.pop().stop()
        timeout = self.conf.shutdown_timeout
        for transport in self._transports.values():
            try:
                await transport.stop_fetching(timeout)
            except Exception as exc:
                logger.error("%s failed to stop fetching: %r", transport.label, exc)
        for agent in self.agents.values():
            await agent.stop()
        await self.tables.stop()  # the last changes, while the producers still run
        for transport in self._transports.values():
            await transport.stop()
        for channel in self.channels:
            await channel.stop()

    def _stop_requested(self) -> asyncio.Event:
        if self._stop_event is None:
            self._stop_event = asyncio.Event()
        return self._stop_event

    def request_stop(self) -> None:
        """Ask the worker to stop gracefully (for finite jobs and signal handlers)."""
        self._stop_requested().set()

    def report_crash(self, error: BaseException) -> None:
        """Record a fatal error and ask the worker to stop (exit code 1)."""
        self.crash_reasons.append(error)
        self.request_stop()

    async def wait_for_stop_request(self) -> None:
        """Return when ``request_stop`` or ``report_crash`` was called."""
        await self._stop_requested().wait()

    def main(self, argv: Optional[List[str]] = None) -> None:
        """Command line for a script: ``python myapp.py worker -l info``."""
        from .cli import main
        try:
            self.maybe_discover()  # as Faust: commands may live in other modules
        except ConfigurationError as exc:
            sys.exit(f"Error: {exc}")
        main(argv if argv is not None else sys.argv[1:], app=self)

