"""Smoke test of bench/conference.py: the MRFP (TLS-PSK and plain) and the plain relay each
fan messages out to two participants; no figure is asserted, only that each moved messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow]


def test_conference_bench_runs_each_server() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "conference.py"),
            "--participants",
            "2,3",
            "--seconds",
            "0.5",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout.splitlines()[-1])
    assert {(r["mode"], r["participants"]) for r in rows} == {
        (m, n) for m in ("mrfp tls-psk", "mrfp plain", "relay") for n in (2, 3)
    }
    assert all(r["messages_per_s"] > 0 and r["cpu_ms_per_message"] > 0 for r in rows)
    assert "rate/relay" in done.stdout and "CPU/relay" in done.stdout
