"""bench/fuzz.py as a real process: a short run of every parser passes, and a planted bug
(``--self-test-crash``) is caught, saved and replayed, so that crash detection is never a no-op.
No figure is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

FUZZ = REPO / "bench" / "fuzz.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FUZZ), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_short_run_of_every_parser_finds_no_crash(tmp_path: Path) -> None:
    done = _run("--inputs", "2000", "--seed", "7", "--crashes", str(tmp_path), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["crashed"] is False
    assert [p["parser"] for p in doc["parsers"]] == ["sip", "sdp", "rewrite", "h248", "tpkt"]
    for parser in doc["parsers"]:
        assert parser["inputs"] == 2000
        assert parser["inputs_per_second"] > 0
        assert parser["crashes"] == []
        # both sides of the property are reached: inputs that parse and inputs that are refused
        assert parser["outcome_classes"] >= 4, parser
        assert sum(parser["outcomes"].values()) == 2000
    assert list(tmp_path.iterdir()) == []


def test_text_report_names_each_parser() -> None:
    done = _run("--inputs", "300", "--parser", "tpkt")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tpkt: 300 inputs in " in done.stdout
    assert "inputs/s" in done.stdout and "outcome classes" in done.stdout
    assert "no crash" in done.stdout


def test_planted_bug_is_found_saved_and_replayed(tmp_path: Path) -> None:
    done = _run(
        "--inputs", "2000", "--parser", "h248", "--crashes", str(tmp_path), "--self-test-crash"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CRASH IndexError at bench/fuzz.py" in done.stdout, done.stdout
    (reproducer,) = tmp_path.glob("h248-*.bin")
    assert b"\x00" in reproducer.read_bytes()
    assert "IndexError" in reproducer.with_suffix(".txt").read_text()
    again = _run("--parser", "h248", "--self-test-crash", "--replay", str(reproducer))
    assert again.returncode == 1 and "CRASH IndexError" in again.stdout, again.stdout
    fixed = _run("--parser", "h248", "--replay", str(reproducer))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "CRASH" not in fixed.stdout
