"""``@app.command(...)``: subcommands an app adds to its command line (Faust's API).

::

    from sabot.cli import option, argument

    @app.command(option("--count", type=int, default=10), argument("prefix"))
    async def produce(self, count: int, prefix: str) -> None:
        for i in range(count):
            await orders.send(value={"id": f"{prefix}{i}"})
        self.say(f"sent {count}")

runs as ``sabot -A myapp:app produce --count 5 x`` and as
``python myapp.py produce --count 5 x``. As in Faust, a function that takes
no parameter is called with none; one whose first parameter is ``self`` gets
the ``AppCommand`` (``self.app``, ``self.say``); the options and arguments
arrive as keyword arguments. Async functions run on a new event loop, and
what they sent is delivered before the command exits (the app's transports
are flushed and closed); plain functions are called directly.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

import click

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import App

__all__ = ["AppCommand"]

#: Subcommands of ``sabot`` itself: an app command may not take these names.
RESERVED = frozenset({"worker", "agents", "send", "tail", "tables", "models", "model", "reset"})


class AppCommand:
    """One ``@app.command``: the function, its click parameters, its name."""

    def __init__(self, app: "App", fun: Callable[..., Any],
                 options: Sequence[Callable[[Any], Any]], name: Optional[str] = None,
                 help: Optional[str] = None) -> None:
        self.app = app
        self.fun = fun
        self.options = tuple(options)
        self.name = (name or fun.__name__).replace("_", "-")
        if self.name in RESERVED:
            raise ConfigurationError(f"app command {self.name!r} would hide `sabot {self.name}`: "
                                     f"give it another name (name=...)")
        for option in self.options:
            if not callable(option):
                raise ConfigurationError(f"app command {self.name!r}: {option!r} is not a "
                                         f"sabot.cli.option(...) or sabot.cli.argument(...)")
        self.help = help if help is not None else inspect.getdoc(fun)
        params = list(inspect.signature(fun).parameters)
        #: Faust's rule: a function with parameters gets the command first.
        self.takes_self = bool(params) and params[0] == "self"

    def __repr__(self) -> str:
        return f"<AppCommand {self.name} of {self.app.id!r}>"

    def say(self, *args: Any, err: bool = False) -> None:
        """Print a line (Faust's ``AppCommand.say``)."""
        click.echo(" ".join(str(a) for a in args), err=err)

    def carp(self, *args: Any) -> None:
        """Print a line to standard error."""
        self.say(*args, err=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function as the command line would (for tests and scripts)."""
        return self.fun(self, *args, **kwargs) if self.takes_self else self.fun(*args, **kwargs)

    def click_command(self) -> click.Command:
        """The click command that runs this function."""
        from .cli import run_with_app

        def callback(**kwargs: Any) -> None:
            result = self(**kwargs)
            if inspect.isawaitable(result):
                async def go() -> None:
                    await result
                run_with_app(self.app, go)

        command: Any = callback
        for option in reversed(self.options):
            command = option(command)
        return click.command(name=self.name, help=self.help)(command)


def commands_of(app: Any) -> Dict[str, AppCommand]:
    """The commands an app defined (none for an object that defines none)."""
    found = getattr(app, "commands", None)
    return found if isinstance(found, dict) else {}
