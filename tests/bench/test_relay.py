"""The relay benchmark runs (tiny sizes) and prints its table; it asserts no figure."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, require_tool


@pytest.mark.slow
def test_relay_bench_quick_mode_runs() -> None:
    require_tool("stunnel4")
    require_tool("haproxy")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "relay.py"),
            "--quick",
            "--size",
            str(4 << 20),
            "--handshakes",
            "8",
            "--idle",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.strip().startswith("agw"))
    assert header.split() == ["agw", "stunnel", "haproxy"]
    for metric in ("MB/s", "CPU s/GiB", "handshakes/s", "RSS KiB/session"):
        row = next(line for line in lines if line.startswith(metric))
        assert len(row[20:].split()) == 3
    assert "ratios agw / haproxy:" in result.stdout
