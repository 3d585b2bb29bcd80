"""Smoke test of bench/cps.py --quick: SIPp through the P-CSCF with e2ae and a real AGW process,
beside SIPp direct. Checks that the benchmark runs and that the AGW holds nothing afterwards;
no figure is asserted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def test_cps_quick_runs_and_leaks_nothing() -> None:
    require_tool("sipp")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cps.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "highest rate without a failed call" in done.stdout, done.stdout
    assert "AGW terminations still held at the end: 0" in done.stdout, done.stdout
