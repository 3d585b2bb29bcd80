"""``e2ae kms`` as a real process over HTTPS with mutual certificates, and ``e2ae
kms-client`` as the scripted users: Alice obtains a ticket for Bob, Bob resolves it to the
same keys, Carol is refused; a restart keeps the ticket; bad configuration is one line."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import certs
from tests.conftest import REPO, run_e2ae

NOW = datetime.datetime.now(datetime.UTC)
USERS = ("alice", "bob", "carol")


def _users_toml(tmp: Path, pins: dict[str, str]) -> str:
    out = []
    for name in USERS:
        key = os.urandom(16).hex()
        (tmp / f"{name}.psk").write_text(key + "\n")
        out.append(
            f'[[kms.user]]\nidentity = "sip:{name}@e2ae.lab"\nkey = "{key}"\n'
            f'tls = ["{pins[name]}"]\n'
        )
    return "\n".join(out)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[dict[str, object]]:
    pins = {}
    for name in (*USERS, "kms"):
        pair = certs.generate(name, now=NOW)
        certs.write(pair, tmp_path)
        pins[name] = pair.fingerprint("sha-256").value
    config = tmp_path / "kms.toml"
    config.write_text(
        '[kms]\nidentity = "kms.e2ae.lab"\nlisten = "127.0.0.1:0"\ncert = "kms.crt"\n'
        'key = "kms.key"\nstate = "kms.sqlite"\n\n' + _users_toml(tmp_path, pins)
    )
    state: dict[str, object] = {"tmp": tmp_path, "config": config, "pins": pins}
    yield state
    proc = state.get("proc")
    if isinstance(proc, subprocess.Popen) and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def _start(lab: dict[str, object]) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "kms", "--config", str(lab["config"])],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lab["proc"] = proc
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("e2ae kms: kms.e2ae.lab listening on 127.0.0.1:"), (
        line,
        proc.stderr.read() if proc.poll() is not None and proc.stderr else b"",
    )
    assert "users 3" in line
    return line.split(" listening on ")[1].split()[0]


def _client(lab: dict[str, object], kms: str, who: str, action: str, *extra: str) -> object:
    tmp = lab["tmp"]
    assert isinstance(tmp, Path)
    pins = lab["pins"]
    assert isinstance(pins, dict)
    return run_e2ae(
        [
            "kms-client",
            action,
            "--kms",
            kms,
            "--kms-pin",
            pins["kms"],
            "--cert",
            str(tmp / f"{who}.crt"),
            "--key",
            str(tmp / f"{who}.key"),
            "--identity",
            f"sip:{who}@e2ae.lab",
            "--psk-file",
            str(tmp / f"{who}.psk"),
            *extra,
        ]
    )


def test_alice_gets_a_ticket_bob_resolves_it_carol_is_refused(lab: dict[str, object]) -> None:
    kms = _start(lab)
    tmp = lab["tmp"]
    assert isinstance(tmp, Path)
    ticket = tmp / "ticket.json"
    got = _client(
        lab,
        kms,
        "alice",
        "request",
        "--responder",
        "sip:bob@e2ae.lab",
        "--sessions",
        "2",
        "--ticket-out",
        str(ticket),
    )
    assert got.returncode == 0, got.stderr  # type: ignore[attr-defined]
    alice = json.loads(got.stdout)  # type: ignore[attr-defined]
    assert alice["outcome"] == "ok" and len(alice["sessions"]) == 2
    assert "tgk" not in alice["sessions"][0]  # keys only with --show-keys

    bob_run = _client(lab, kms, "bob", "resolve", "--ticket", str(ticket), "--show-keys")
    assert bob_run.returncode == 0, bob_run.stderr  # type: ignore[attr-defined]
    bob = json.loads(bob_run.stdout)  # type: ignore[attr-defined]
    for a, b in zip(alice["sessions"], bob["sessions"], strict=True):
        assert a["tgk_sha256"] == b["tgk_sha256"] and a["tls_psk_sha256"] == b["tls_psk_sha256"]
    assert len(bytes.fromhex(bob["sessions"][0]["tls_psk"])) == 32

    carol = _client(lab, kms, "carol", "resolve", "--ticket", str(ticket))
    assert carol.returncode == 1  # type: ignore[attr-defined]
    assert json.loads(carol.stdout) == {  # type: ignore[attr-defined]
        "outcome": "refused",
        "http_status": 403,
        "mikey_error": "the KMS refused: AUTH_FAILURE",
    }

    # A restart loses no ticket: Bob resolves it again from the new process.
    proc = lab["proc"]
    assert isinstance(proc, subprocess.Popen)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    kms = _start(lab)
    again = _client(lab, kms, "bob", "resolve", "--ticket", str(ticket))
    assert again.returncode == 0, again.stderr  # type: ignore[attr-defined]
    assert (
        json.loads(again.stdout)["sessions"][0]["tgk_sha256"]
        == (  # type: ignore[attr-defined]
            alice["sessions"][0]["tgk_sha256"]
        )
    )


def test_a_client_with_another_users_certificate_is_refused(lab: dict[str, object]) -> None:
    kms = _start(lab)
    tmp = lab["tmp"]
    assert isinstance(tmp, Path)
    # Carol's certificate, Alice's identity and key: the KMS binds the two.
    (tmp / "mixed.crt").write_bytes((tmp / "carol.crt").read_bytes())
    (tmp / "mixed.key").write_bytes((tmp / "carol.key").read_bytes())
    pins = lab["pins"]
    assert isinstance(pins, dict)
    result = run_e2ae(
        [
            "kms-client",
            "request",
            "--kms",
            kms,
            "--kms-pin",
            pins["kms"],
            "--cert",
            str(tmp / "mixed.crt"),
            "--key",
            str(tmp / "mixed.key"),
            "--identity",
            "sip:alice@e2ae.lab",
            "--psk-file",
            str(tmp / "alice.psk"),
            "--ticket-out",
            str(tmp / "t.json"),
        ]
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["mikey_error"] == "the KMS refused: AUTH_FAILURE"


def test_a_kms_with_another_certificate_is_not_trusted(lab: dict[str, object]) -> None:
    kms = _start(lab)
    pins = lab["pins"]
    assert isinstance(pins, dict)
    pins["kms"] = pins["bob"]
    result = _client(lab, kms, "alice", "request", "--ticket-out", "/dev/null")
    assert result.returncode == 2  # type: ignore[attr-defined]
    assert b"is not the pinned" in result.stderr  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[kms]\n", "missing identity"),
        (
            '[kms]\nidentity="k"\nlisten="127.0.0.1:0"\ncert="x.crt"\nkey="x.key"\nstate="s"\n',
            "KMS certificate",
        ),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(tmp_path: Path, text: str, words: str) -> None:
    config = tmp_path / "kms.toml"
    config.write_text(text)
    result = run_e2ae(["kms", "--config", str(config)])
    assert result.returncode == 2
    line = result.stderr.decode()
    assert line.count("\n") == 1 and words in line and "Traceback" not in line
