"""Helpers for tests that drive a command line as a real process (to send it signals mid-run)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for_line(path: Path, fragment: str, process: subprocess.Popen, timeout: float = 240.0) -> None:
    """Polls a file the process writes (its log, its redirected stderr) until it contains ``fragment`` (the run has
    reached that point); fails, naming the fragment, if the process ends first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and fragment in path.read_text():
            return
        if process.poll() is not None:
            output = process.communicate()[1] or (path.read_text() if path.exists() else "")
            raise AssertionError(f"the run ended before {fragment!r}:\n{output[-3000:]}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{fragment!r} never appeared in {path}")
