"""The golden SDP corpus, ``tests/sdp_cases/NAME/``, through the library and through the CLI.

Each case has ``in.sdp``, ``args.txt`` (STEP and ``e2ae sdp rewrite`` options), and either
``out.sdp`` (the expected SDP) or ``error.txt`` (the expected error: ``line N: ...`` or
``stream N: ...``). Optional: ``policy.toml`` (given as ``--policy``), ``offer.txt`` (answer
steps: the name of the offer case whose state they use), ``streams.json`` (the expected
``streams`` of ``--json``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from certs.fingerprint import Fingerprint
from lab.cli import build_parser
from pcscf.errors import PcscfError
from pcscf.policy import Policy, load_policy
from pcscf.rewrite import (
    RewriteResult,
    RewriteState,
    deterministic_reservations,
    plan_offer,
    rewrite_answer,
    rewrite_offer,
    stream_to_json,
)
from pcscf.sdp import SessionDescription
from tests.conftest import REPO, e2ae_command

CASES = REPO / "tests" / "sdp_cases"
NAMES = sorted(p.name for p in CASES.iterdir() if (p / "in.sdp").exists())


def _args(case: Path) -> list[str]:
    words = shlex.split((case / "args.txt").read_text())
    if (case / "policy.toml").exists():
        words += ["--policy", str(case / "policy.toml")]
    return words


def _namespace(case: Path) -> Any:
    words = _args(case)
    return build_parser().parse_args(["sdp", "rewrite", words[0], str(case / "in.sdp"), *words[1:]])


def _library(case: Path) -> RewriteResult:
    """Run a case with the library only (answer cases: their offer case first)."""
    ns = _namespace(case)
    policy = Policy() if ns.policy is None else load_policy(ns.policy)
    sdp = SessionDescription.parse((case / "in.sdp").read_bytes())
    if (case / "offer.txt").exists():
        offer = _library(CASES / (case / "offer.txt").read_text().strip())
        state = RewriteState.from_json(json.loads(json.dumps(offer.state.to_json())))
        return rewrite_answer(ns.step, sdp, state)
    plan = plan_offer(ns.step, sdp, ns.ue_mechanisms.split(","), policy)
    reservations = deterministic_reservations(
        plan,
        access_address=ns.agw_access,
        core_address=ns.agw_core,
        fingerprint=Fingerprint.parse(ns.agw_fingerprint),
        port_base=ns.port_base,
    )
    return rewrite_offer(sdp, plan, reservations)


def _cli(case: Path, state_dir: Path) -> subprocess.CompletedProcess[bytes]:
    """Run a case as real ``e2ae sdp rewrite`` processes (offer case first for answers)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    state = state_dir / f"{case.name}.json"
    if (case / "offer.txt").exists():
        offer = CASES / (case / "offer.txt").read_text().strip()
        words = _args(offer)
        first = subprocess.run(
            [*e2ae_command(), "sdp", "rewrite", words[0], "-", *words[1:], "--state", str(state)],
            input=(offer / "in.sdp").read_bytes(),
            capture_output=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert first.returncode == 0, first.stderr
    words = _args(case)
    return subprocess.run(
        [*e2ae_command(), "sdp", "rewrite", words[0], "-", *words[1:], "--state", str(state)],
        input=(case / "in.sdp").read_bytes(),
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def cli_runs() -> Any:
    """Every case through the CLI, two processes at a time."""
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_cli, CASES / name, Path(tmp)) for name in NAMES}
        yield {name: future.result() for name, future in futures.items()}


def test_corpus_is_big_enough() -> None:
    assert len(NAMES) >= 30
    steps = {shlex.split((CASES / n / "args.txt").read_text())[0] for n in NAMES}
    assert steps == {"orig-offer", "orig-answer", "term-offer", "term-answer"}


@pytest.mark.parametrize("name", NAMES)
def test_case_library(name: str) -> None:
    case = CASES / name
    if (case / "error.txt").exists():
        expected = (case / "error.txt").read_text().strip()
        with pytest.raises(PcscfError) as info:
            _library(case)
        assert str(info.value) == expected
        return
    result = _library(case)
    assert result.sdp.serialise() == (case / "out.sdp").read_bytes()
    if (case / "streams.json").exists():
        expected_streams = json.loads((case / "streams.json").read_text())
        assert [stream_to_json(s) for s in result.streams] == expected_streams


@pytest.mark.parametrize("name", NAMES)
def test_case_cli(name: str, cli_runs: Any) -> None:
    case = CASES / name
    run = cli_runs[name]
    if (case / "error.txt").exists():
        expected = (case / "error.txt").read_text().strip()
        assert run.returncode != 0
        assert run.stdout == b""
        assert run.stderr.decode() == f"e2ae sdp rewrite: stdin: {expected}\n"
        return
    assert run.returncode == 0, run.stderr
    assert run.stderr == b""
    if (case / "streams.json").exists():
        doc = json.loads(run.stdout)
        assert set(doc) == {"sdp", "streams"}
        assert doc["sdp"].encode() == (case / "out.sdp").read_bytes()
        assert doc["streams"] == json.loads((case / "streams.json").read_text())
    else:
        assert run.stdout == (case / "out.sdp").read_bytes()
