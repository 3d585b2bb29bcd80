"""``e2ae msrp-as`` as a real process: it says where it listens, stops on SIGTERM, and refuses
a bad configuration with a message. 127.0.0.1 only."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
from pathlib import Path

import certs
from tests.conftest import REPO, e2ae_command, run_e2ae

NOW = datetime.datetime.now(datetime.UTC)


def _args(tmp_path: Path, key_text: str = "00" * 16) -> list[str]:
    certs.write(certs.generate("msrp-as", now=NOW), tmp_path)
    kms = certs.generate("kms", now=NOW)
    (tmp_path / "as.psk").write_text(key_text)
    return [
        "msrp-as",
        "--sip",
        "127.0.0.1:0",
        "--next-hop",
        "127.0.0.1:5060",
        "--identity",
        "sip:msrp-as@lab.example",
        "--kms",
        "127.0.0.1:8443",
        "--kms-pin",
        kms.fingerprint().value,
        "--kms-psk-file",
        str(tmp_path / "as.psk"),
        "--cert",
        str(tmp_path / "msrp-as"),
    ]


def test_e2ae_msrp_as_runs_says_where_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [*e2ae_command(), *_args(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("e2ae msrp-as: sip:msrp-as@lab.example on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        assert port > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_e2ae_msrp_as_refuses_a_key_that_is_not_hex(tmp_path: Path) -> None:
    result = run_e2ae(_args(tmp_path, key_text="not hex"))
    assert result.returncode != 0
    assert b"the shared key must be hex" in result.stderr


def test_e2ae_msrp_as_needs_its_certificate(tmp_path: Path) -> None:
    args = _args(tmp_path)
    args[args.index("--cert") + 1] = str(tmp_path / "missing")
    result = run_e2ae(args)
    assert result.returncode != 0 and b"missing.crt" in result.stderr


def test_e2ae_msrp_as_refuses_a_bad_kms_pin(tmp_path: Path) -> None:
    args = _args(tmp_path)
    args[args.index("--kms-pin") + 1] = "sha-256 zz"
    result = run_e2ae(args)
    assert result.returncode != 0 and b"--kms-pin" in result.stderr
    assert b"Traceback" not in result.stderr
