"""Smoke test of bench/wakeup.py as a process: it measures, and prints every line it promises
(no figure is judged: speed is the benchmark's to report, not a test's to assert)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _wakeup(*args: str) -> subprocess.CompletedProcess[str]:
    """``bench/wakeup.py ARGS`` as a process."""
    script = str(REPO / "bench" / "wakeup.py")
    command = [sys.executable, script, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_wakeup_prints_the_cpu_of_a_sleep_and_of_the_work_after_it() -> None:
    done = _wakeup("--seconds", "0.2", "--gaps", "1,2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("machine: nproc ")
    tight = lines[1].split()
    assert tight[:4] == ["work", "back", "to", "back:"] and float(tight[4]) > 0, lines[1]
    rows = [line.split() for line in lines if line.strip().endswith("x") and "ms" in line]
    assert [row[0] for row in rows] == ["1.0ms", "2.0ms"], done.stdout
    for row in rows:
        assert float(row[1]) > 0  # a sleep and its wake-up cost some CPU
        assert row[2] == "us" and row[4] == "us" and row[5].endswith("x")


def test_wakeup_refuses_bad_gaps() -> None:
    done = _wakeup("--gaps", "0")
    assert done.returncode == 2 and "must be positive" in done.stderr
