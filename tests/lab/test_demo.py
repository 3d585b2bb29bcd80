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


def _demo_json(**env_extra: str) -> tuple[int, dict[str, Any], str]:
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [*e2ae_command(), "demo", "--json"],
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    return done.returncode, json.loads(done.stdout), done.stdout.decode() + done.stderr.decode()


def test_demo_json_reports_the_kms_scenarios() -> None:
    from certs.psk import ALLOWED_PSK_CIPHERS

    code, summary, out = _demo_json()
    assert code == 0, out
    assert summary["ok"] is True and summary["error"] is None
    kms = summary["kms"]
    assert kms["kms"] == "kms.e2ae.lab" and kms["ok"] is True
    assert kms["users"] == [f"sip:{n}@lab.example" for n in ("alice", "bob", "carol")]
    call, carol, via, messages, conference = kms["scenarios"]
    assert [s["name"] for s in kms["scenarios"]] == [
        "kms call",
        "carol",
        "via AS",
        "messages",
        "conference",
    ]
    assert via["app_server"] == "sip:msrp-as@lab.example"
    assert via["as_kms_exchanges"] == ["RESOLVE_INIT_PSK", "REQUEST_INIT_PSK"]
    assert via["tls_terminated_by"] == {
        "alice": "sip:msrp-as@lab.example",
        "dave": "sip:msrp-as@lab.example",
    }
    assert via["callee_call_id"] != via["call_id"]
    for scenario in (call, carol, via, messages, conference):
        assert scenario["ok"] is True and scenario["checks"]
        assert all(c["ok"] for c in scenario["checks"]), scenario["checks"]
        # every scenario check is one of the demo's checks, and counts for its pass/fail
        names = {c["name"] for c in summary["checks"] if c["ok"]}
        assert {f"{scenario['name']}: {c['name']}" for c in scenario["checks"]} <= names

    assert (call["from"], call["to"], call["status"]) == (
        "sip:alice@lab.example",
        "sip:bob@lab.example",
        200,
    )
    assert call["kms_exchanges"] == {"alice": ["REQUEST_INIT_PSK"], "bob": ["RESOLVE_INIT_PSK"]}
    assert call["treatment"] == ["e2e", "e2e"]
    assert call["sdp_untouched"] is True and call["agw_terminations"] == 0
    assert [(s["media"], s["proto"], s["cs_id"]) for s in call["streams"]] == [
        ("message", "TCP/TLS/MSRP", 1),
        ("application", "TCP/TLS/BFCP", 2),
    ]
    for stream in call["streams"]:
        assert stream["tls_psk"] is True and stream["keys_match"] is True
        assert stream["tls_version"] == "TLSv1.2"
        assert stream["cipher"] in ALLOWED_PSK_CIPHERS
        assert stream["bytes_sent"] > 0 and stream["bytes_received"] > 0
        assert not {k for k in stream if "psk" in k and k != "tls_psk"}  # never the keys
    msrp, bfcp = call["streams"]
    assert msrp["bytes_sent"] > bfcp["bytes_sent"]

    assert (carol["to"], carol["keyed_for"], carol["status"]) == (
        "sip:carol@lab.example",
        "sip:bob@lab.example",
        488,
    )
    assert carol["warning"] == "INVALID_ID: the TRANSFER_INIT is for sip:bob@lab.example"
    assert carol["kms_exchanges"] == [] and carol["tls_refused"] is True
    # immediate messages: one to one, then two to the list with erin offline
    assert messages["one_to_one"]["status"] == 200
    assert messages["list_status"] == [202, 202] and messages["stored_for_offline"] == 2
    members = ("bob", "carol", "erin")
    assert messages["members"] == [f"sip:{m}@lab.example" for m in members]
    for name in members:
        assert sorted(m["protected_by"] for m in messages["delivered"][name]) == [
            "sip:alice@lab.example",
            "sip:lists@lab.example",
        ]
    # the conference: two participants with TLS-PSK, one through the AGW, one MRFP context
    assert conference["conference"] == "sip:conf1@lab.example"
    legs = conference["participants"]
    assert all(leg["tls_psk"] for n in ("alice", "carol") for leg in legs[n].values())
    assert [leg["proto"] for leg in legs["bob"].values()] == ["TCP/TLS/MSRP", "TCP/TLS/BFCP"]
    assert not any(leg["tls_psk"] for leg in legs["bob"].values())
    assert conference["mrfp"] == {"contexts": 1, "terminations": 6}
    assert all(c["ok"] for c in conference["chat"]) and len(conference["chat"]) == 4
    assert conference["floor"][-1] == "carol granted"
    # the certificate scenarios are still there, as they were
    assert summary["impostor_refused"] is True and len(summary["calls"]) == 2


def test_demo_text_shows_the_kms_steps() -> None:
    done = run_e2ae(["demo"], timeout=120)
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    flow, _, table = out.partition("\nSummary\n")
    assert " KMS " in flow
    # in order: the KMS call, its keys from the KMS, TLS-PSK, then carol refused twice
    call = flow.index("kms: alice calls bob with keys from the KMS")
    issued = flow.index("issued to sip:alice@lab.example")
    resolved = flow.index("resolved for sip:bob@lab.example")
    psk = flow.index("verified by the key (TLSv1.2")
    to_carol = flow.index("kms: alice's offer keyed for bob goes to carol")
    carol_tls = flow.index("kms: carol, without the call's key, tries TLS-PSK")
    refused = flow.index("TLS-PSK peer", carol_tls)
    assert call < issued < resolved < psk < to_carol < carol_tls < refused
    assert "KMS kms.e2ae.lab" in table
    assert "carol: offer keyed for bob answered 488, TLS-PSK refused: yes" in table
    assert "[ok] kms call: the P-CSCF classed both streams e2e" in table
    assert table.rstrip().endswith("ALL GOOD")


def test_demo_fails_when_bob_holds_another_key_than_the_kms() -> None:
    code, summary, out = _demo_json(E2AE_DEMO_BREAK="kms-key")
    assert code == 1, out
    assert summary["ok"] is False and summary["kms"]["ok"] is False
    # bob's RESOLVE is refused by the KMS: he answers 488 and no KMS call is made
    call = summary["kms"]["scenarios"][0]
    assert call["name"] == "kms call" and call["ok"] is False and call["status"] == 488
    failed = [c["name"] for c in summary["checks"] if not c["ok"]]
    assert "kms call: bob answered 200 with his TRANSFER_RESP" in failed
    assert "the KMS refused" in call["checks"][0]["detail"]
    # only the KMS scenarios that need bob's key failed; the demo ran to its end
    assert all(n.startswith(("kms call: ", "carol: ", "messages: ")) for n in failed)
    assert not [n for n in failed if n.startswith("conference: ")]
    assert "messages: alice to bob answered 200" in failed
    assert summary["error"] is None
