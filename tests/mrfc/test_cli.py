"""``e2ae mrfc`` as a real process: it says where it listens (SIP and Mp), answers SIP,
starts its own KMS for ``ticket_source = "self"``, stops on SIGTERM, and refuses a bad
configuration with one line and exit code 2. 127.0.0.1 only."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
from pathlib import Path

import certs
from pcscf.sip import Response
from pcscf.sip.message import parse_datagram
from tests.conftest import REPO, e2ae_command, run_e2ae

NOW = datetime.datetime.now(datetime.UTC)


def write_config(tmp_path: Path, extra: str = "", *, top: str = "") -> Path:
    if not (tmp_path / "mrfc.crt").exists():
        certs.write(certs.generate("mrfc", now=NOW), tmp_path)
    (tmp_path / "mrfc.psk").write_text("00" * 16)
    kms_pin = certs.generate("kms", now=NOW).fingerprint().value
    mrfp_pin = certs.generate("mrfp", now=NOW).fingerprint().value
    path = tmp_path / "mrfc.toml"
    path.write_text(
        f"""
sip = "127.0.0.1:0"
next_hop = "127.0.0.1:5060"
identity = "sip:mrfc@lab.example"
{top}
[mp]
listen = "127.0.0.1:0"
tls = "mrfc"
peer = "{mrfp_pin}"

[kms]
address = "127.0.0.1:8443"
pin = "{kms_pin}"
key_file = "mrfc.psk"
cert = "mrfc"

[conferences."sip:conf1@lab.example"]
participants = ["sip:alice@lab.example", "sip:bob@lab.example"]
{extra}
"""
    )
    return path


def _self_kms(tmp_path: Path) -> str:
    certs.write(certs.generate("self-kms", now=NOW), tmp_path)
    mrfc_fp = certs.load_pair(tmp_path / "mrfc.crt", tmp_path / "mrfc.key").fingerprint()
    (tmp_path / "self-kms.toml").write_text(
        f"""
[kms]
identity = "kms.mrfc.lab"
listen = "127.0.0.1:0"
cert = "self-kms.crt"
key = "self-kms.key"
state = "self-kms.sqlite"

[[kms.user]]
identity = "sip:mrfc@lab.example"
key = "{"00" * 16}"
tls = ["{mrfc_fp.value}"]
"""
    )
    return 'ticket_source = "self"\n[self_kms]\nconfig = "self-kms.toml"\n'


def _options() -> bytes:
    return (
        b"OPTIONS sip:conf1@lab.example SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKcli1\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:alice@lab.example>;tag=a\r\n"
        b"To: <sip:conf1@lab.example>\r\nCall-ID: cli-1\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def _run(path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [*e2ae_command(), "mrfc", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("e2ae mrfc: sip:mrfc@lab.example on 127.0.0.1:"), line
        port = int(line.split(" on 127.0.0.1:")[1].split(",")[0])
        mp_port = int(line.rsplit("Mp on ", 1)[1])
        with socket.create_connection(("127.0.0.1", mp_port), timeout=10):
            pass  # the MRFP's side of Mp is open
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(10)
            request = _options().replace(
                b"127.0.0.1:9", f"127.0.0.1:{sock.getsockname()[1]}".encode()
            )
            sock.sendto(request, ("127.0.0.1", port))
            answer = parse_datagram(sock.recv(65535))
        assert isinstance(answer, Response) and answer.status == 405
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_e2ae_mrfc_runs_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    _run(write_config(tmp_path))


def test_e2ae_mrfc_with_its_own_kms(tmp_path: Path) -> None:
    write_config(tmp_path)
    path = write_config(tmp_path, top=_self_kms(tmp_path))
    _run(path)
    assert (tmp_path / "self-kms.sqlite").is_file()


def test_a_bad_config_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, extra="floors = [0]")
    result = run_e2ae(["mrfc", "--config", str(path)])
    assert result.returncode == 2
    err = result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert err.count("\n") == 1 and err.startswith("e2ae mrfc: ")
    assert "floors must be distinct floor ids" in err and str(path) in err


def test_a_missing_config_file(tmp_path: Path) -> None:
    result = run_e2ae(["mrfc", "--config", str(tmp_path / "none.toml")])
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert result.stderr.count(b"\n") == 1
