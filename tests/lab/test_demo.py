"""``e2ae demo`` as a real process: the JSON summary, every field, and a failing check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.conftest import REPO, e2ae_command, run_e2ae


def _streams(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for call in summary["calls"] for s in call["streams"]]


def test_demo_json_reports_every_scenario() -> None:
    done = run_e2ae(["demo", "--json"], timeout=120)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    assert summary["impostor_refused"] is True
    assert summary["iq_impostor_refused"] is True
    iq_checks = [c for c in summary["checks"] if "Iq" in c["name"]]
    assert [c["name"] for c in iq_checks][:2] == [
        "AGW registered over Iq (mutual TLS, pinned certificates)",
        "Iq impostor refused by the P-CSCF (certificate not pinned), agw1 still in service",
    ]
    assert [(c["from"], c["to"]) for c in summary["calls"]] == [
        ("sip:alice@lab.example", "sip:bob@lab.example"),
        ("sip:alice@lab.example", "sip:peer@lab.example"),
    ]
    for call in summary["calls"]:
        assert [s["media"] for s in call["streams"]] == ["message", "application"]
        assert [s["proto_ue"] for s in call["streams"]] == ["TCP/TLS/MSRP", "TCP/TLS/BFCP"]
        assert [s["proto_core"] for s in call["streams"]] == ["TCP/MSRP", "TCP/BFCP"]
    for stream in _streams(summary):
        assert stream["fingerprint_verified"] is True
        assert stream["bytes_to_core"] > 0 and stream["bytes_to_ue"] > 0
        assert stream["agw_fingerprint"] != stream["ue_fingerprint"]
        assert stream["agw_fingerprint"].startswith("sha-256 ")
    # the MSRP messages are bigger than BFCP's fixed-size messages, both ways
    msrp, bfcp = summary["calls"][0]["streams"]
    assert msrp["bytes_to_core"] > bfcp["bytes_to_core"]
    assert all(c["ok"] for c in summary["checks"]) and summary["error"] is None


def test_demo_text_prints_the_flow_then_the_table() -> None:
    done = run_e2ae(["demo"], timeout=120)
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    flow, _, table = out.partition("\nSummary\n")
    for label in ("SIP", "P-CSCF", "Iq", "AGW", "MEDIA"):
        assert f" {label} " in flow
    # in order: the INVITE before the Iq reservation before the TLS refusal of the impostor
    invite = flow.index("INVITE sip:bob@lab.example")
    reserved = flow.index("reserved")
    refused = flow.index("TLS refused")
    assert invite < reserved < refused
    assert "impostor refused: yes" in table
    assert table.rstrip().endswith("ALL GOOD")


def test_demo_fails_when_the_agw_announces_a_wrong_fingerprint() -> None:
    env = dict(os.environ, E2AE_DEMO_BREAK="agw-fingerprint")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [*e2ae_command(), "demo", "--json"],
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["ok"] is False
    # the UE refused the AGW: its certificate is not the one the SDP announced
    assert "PeerNotVerified" in summary["error"]
    assert "does not match the SDP fingerprint" in summary["error"]


def test_demo_help_names_json() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lab.cli", "demo", "--help"],
        capture_output=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=False,
    )
    assert done.returncode == 0 and b"--json" in done.stdout
