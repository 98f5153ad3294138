"""Facts about the machine a benchmark runs on, for the tables in docs/benchmarks.md."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess


def run_text(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout

def filesystem(path: str) -> str:
    """`ext4 on /dev/vda mounted at / (rw,relatime,...)`, or what can be found of it."""
    out = run_text(["df", "-T", path])
    if out is not None:
        fields = " ".join(out.splitlines()[1:]).split()
        if len(fields) >= 7:
            device, fstype, mountpoint = fields[0], fields[1], fields[-1]
            options = ""
            with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
                for line in mounts:
                    parts = line.split()
                    if len(parts) >= 4 and parts[1] == mountpoint and parts[0] == device:
                        options = f" ({parts[3]})"
            return f"{fstype} on {device} mounted at {mountpoint}{options}"
    out = run_text(["stat", "-f", "-c", "%T", path])
    return out.strip() if out else "unknown"

def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    out = run_text(["sysctl", "-n", "machdep.cpu.brand_string"])
    return out.strip() if out else (platform.processor() or "unknown")

def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "unknown"
