"""Real servers for the tests (pytest plugins ``kafka`` and ``redis``) and what they share."""
import signal
import socket
import subprocess
from typing import Optional


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: Optional[subprocess.Popen], *, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL) ``proc`` and reap it; SIGKILL if it lingers 5 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
