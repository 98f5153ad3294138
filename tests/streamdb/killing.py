"""Running a helper script as a real process and killing it with SIGKILL at a random
moment after it says it is ready: what the kill -9 tests share."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(script: Path, args: list[str], rng: random.Random,
                 window: tuple[float, float], *, ready_within: float = 60) -> list[str]:
    """Start `script args` with the project importable, wait for its "R" line, let it run
    for a random time in `window` seconds, SIGKILL it, and return every line it printed.
    Fails the test if it exits on its own or is not ready within `ready_within` seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            env=env)
    assert proc.stdout is not None
    lines: list[str] = []
    buf = b""
    deadline: float | None = None
    give_up = time.monotonic() + ready_within
    while deadline is None or time.monotonic() < deadline:
        assert deadline is not None or time.monotonic() < give_up, f"{script.name} not ready"
        if select.select([proc.stdout], [], [], 0.01)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                pytest.fail(f"{script.name} exited early with {proc.wait()}")
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [d.decode() for d in done]
            if deadline is None and "R" in lines:
                deadline = time.monotonic() + rng.uniform(*window)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    buf += proc.stdout.read()
    proc.stdout.close()
    return lines + [d.decode() for d in buf.split(b"\n") if d]
