"""``@app.command``: subcommands of ``sabot -A app`` and of ``python app.py`` (Faust's API)."""
import os
import subprocess
import sys
import textwrap

import pytest

import sabot
from sabot.exceptions import ConfigurationError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

APP = textwrap.dedent('''
    import sabot
    from sabot.cli import argument, option

    app = sabot.App("cmd-app")
    out = app.topic("out")

    @app.command(option("--count", type=int, default=2, help="How many."), argument("prefix"))
    async def produce(self, count: int, prefix: str) -> None:
        """Send COUNT values."""
        for i in range(count):
            await out.send(value=f"{prefix}{i}")
        self.say(f"sent {count} from {self.app.id} with {prefix}")

    @app.command()
    async def hello() -> None:
        print("hello without self")

    @app.command(name="sync-one")
    def sync_one(self) -> None:
        self.say("sync", self.app.id)

    if __name__ == "__main__":
        app.main()
''')


@pytest.fixture
def app_file(tmp_path):
    path = tmp_path / "cmdapp.py"
    path.write_text(APP)
    return path


def run(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_command_runs_from_sabot_cli_with_options_and_arguments(app_file):
    done = run(["-m", "sabot", "-A", "cmdapp:app", "produce", "--count", "3", "x"], app_file.parent)
    assert done.returncode == 0, done.stderr
    assert "sent 3 from cmd-app with x" in done.stdout


def test_command_runs_from_python_app_py(app_file):
    done = run([str(app_file), "hello"], app_file.parent)
    assert done.returncode == 0, done.stderr
    assert "hello without self" in done.stdout
    done = run([str(app_file), "sync-one"], app_file.parent)
    assert done.returncode == 0, done.stderr
    assert "sync cmd-app" in done.stdout


def test_app_commands_appear_in_help_and_bad_options_give_one_line(app_file):
    done = run(["-m", "sabot", "-A", "cmdapp:app", "--help"], app_file.parent)
    assert done.returncode == 0, done.stderr
    assert "produce" in done.stdout and "worker" in done.stdout
    done = run(["-m", "sabot", "-A", "cmdapp:app", "produce", "--count", "many", "x"], app_file.parent)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "'many' is not a valid integer" in done.stderr
    done = run(["-m", "sabot", "-A", "cmdapp:app", "nosuch"], app_file.parent)
    assert done.returncode == 2 and "No such command 'nosuch'" in done.stderr


def test_command_is_callable_and_checked():
    app = sabot.App("cmds")

    @app.command()
    def greet(self, name="x"):
        return f"{self.app.id}:{name}"

    assert greet(name="y") == "cmds:y"
    assert "greet" in app.commands
    with pytest.raises(ConfigurationError, match="defined twice"):
        app.command(name="greet")(lambda: None)
    with pytest.raises(ConfigurationError, match="hide `sabot worker`"):
        app.command()(_worker_named)
    with pytest.raises(ConfigurationError, match="not a sabot.cli.option"):
        app.command("--count")(lambda: None)


def test_faust_only_command_options_warn():
    app = sabot.App("cmds")
    with pytest.warns(sabot.exceptions.SabotCompatibilityWarning, match="base"):
        app.command(base=object)


def _worker_named():
    pass


_worker_named.__name__ = "worker"
