"""Smoke test of bench/cps.py --quick: SIPp through the P-CSCF with e2ae and a real AGW process,
beside SIPp direct. Checks that the benchmark runs and that the AGW holds nothing afterwards;
no figure is asserted."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, require_tool

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def _cps(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``bench/cps.py --quick ARGS`` as a process; it must succeed."""
    require_tool("sipp")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cps.py"), "--quick", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_cps_quick_runs_and_leaks_nothing() -> None:
    done = _cps()
    assert "highest rate without a failed call" in done.stdout, done.stdout
    assert "AGW terminations still held at the end: 0" in done.stdout, done.stdout


def test_cps_cpu_lines_give_each_process_its_share() -> None:
    """``--cpu`` prints, per step, the CPU per call of the P-CSCF, the AGW and SIPp: the
    P-CSCF and SIPp used some during the e2ae step, SIPp alone on the direct path."""
    done = _cps("--cpu", "--cpu-split", "0.5")
    e2ae = [line.split() for line in done.stdout.splitlines() if " e2ae cpu ms/call " in line]
    direct = [line.split() for line in done.stdout.splitlines() if " direct cpu ms/call " in line]
    assert len(e2ae) == len(direct) == 2, done.stdout
    for words in e2ae:
        assert words[3::2] == ["pcscf", "agw", "sipp"], words
    for words in direct:
        assert words[3::2] == ["sipp"], words
    # a few ms per call over 10-20 calls a step: at least a clock tick in one of the steps
    assert sum(float(words[4]) for words in e2ae) > 0, done.stdout  # the P-CSCF
    assert sum(float(words[8]) for words in e2ae) > 0, done.stdout  # SIPp through it
    assert sum(float(words[4]) for words in direct) > 0, done.stdout
    # and the P-CSCF's peak memory after each e2ae step, never less than before
    peaks = [line.split() for line in done.stdout.splitlines() if " e2ae pcscf peak rss " in line]
    assert len(peaks) == 2 and all(words[-1] == "MB" for words in peaks), done.stdout
    assert 10 < float(peaks[0][-2]) <= float(peaks[1][-2]) < 10_000, done.stdout
    # the 1 s steps split at 0.5 s: the P-CSCF's CPU before and after, per call and per core
    halves = [line for line in done.stdout.splitlines() if " e2ae pcscf cpu first " in line]
    assert len(halves) == 2, done.stdout
    half = r"([\d.]+) ms/call (\d+) %"
    shape = rf"e2ae pcscf cpu first (0\.[4-9]|1\.\d) s {half}, after {half}"
    for line in halves:
        found = re.search(shape + r" \(of a core\)$", line)
        assert found is not None, line
        assert all(0 <= float(x) < 10_000 for x in found.groups()), line
    assert " direct pcscf cpu " not in done.stdout, done.stdout  # the e2ae steps only


def test_cps_floor_runs_every_call_through_the_relay_and_its_round_trips() -> None:
    """``--floor`` runs each step through bench/floor.py as well: every call completes through
    the relay (SIPp checks each one), and under ``--cpu`` the relay and the echo process used
    CPU for them."""
    done = _cps("--floor", "--cpu")
    rows = [
        line.split() for line in done.stdout.splitlines() if line.split()[:1] in (["10"], ["20"])
    ]
    assert len(rows) == 2 and all(row[7] == "ok" for row in rows), done.stdout  # the floor column
    floor = [line.split() for line in done.stdout.splitlines() if " floor cpu ms/call " in line]
    assert len(floor) == 2, done.stdout
    for words in floor:
        assert words[3::2] == ["relay", "echo", "sipp"], words
    assert sum(float(words[4]) for words in floor) > 0, done.stdout  # the relay
    assert (
        "floor (bench/floor.py" in done.stdout and "20 calls/s without a failed call" in done.stdout
    )
