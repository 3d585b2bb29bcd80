"""``e2ae list-server`` as a real process: it says where it listens, answers SIP, stops on
SIGTERM, and refuses a bad configuration with one line and exit code 2. 127.0.0.1 only."""

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


def _config(tmp_path: Path, extra: str = "") -> Path:
    certs.write(certs.generate("lists", now=NOW), tmp_path)
    (tmp_path / "lists.psk").write_text("00" * 16)
    pin = certs.generate("kms", now=NOW).fingerprint().value
    path = tmp_path / "lists.toml"
    path.write_text(
        f"""
sip = "127.0.0.1:0"
core = "127.0.0.1:5060"
identity = "sip:lists@lab.example"
store = "lists.sqlite"
{extra}
[kms]
address = "127.0.0.1:8443"
pin = "{pin}"
key_file = "lists.psk"
cert = "lists"

[groups."sip:friends@lab.example"]
members = ["sip:alice@lab.example", "sip:bob@lab.example"]
"""
    )
    return path


def _options() -> bytes:
    return (
        b"OPTIONS sip:friends@lab.example SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKcli1\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:alice@lab.example>;tag=a\r\n"
        b"To: <sip:friends@lab.example>\r\nCall-ID: cli-1\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_e2ae_list_server_runs_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [*e2ae_command(), "list-server", "--config", str(_config(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("e2ae list-server: sip:lists@lab.example on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(10)
            request = _options().replace(
                b"127.0.0.1:9", f"127.0.0.1:{sock.getsockname()[1]}".encode()
            )
            sock.sendto(request, ("127.0.0.1", port))
            answer = parse_datagram(sock.recv(65535))
        assert isinstance(answer, Response) and answer.status == 405
        assert answer.get("Allow") == "MESSAGE, REGISTER"
        assert (tmp_path / "lists.sqlite").is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_config_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    path = _config(tmp_path, extra="max_pending = -1")
    result = run_e2ae(["list-server", "--config", str(path)])
    assert result.returncode == 2
    err = result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert err.count("\n") == 1 and err.startswith("e2ae list-server: ")
    assert "max_pending must be a positive whole number" in err and str(path) in err


def test_a_missing_config_file(tmp_path: Path) -> None:
    result = run_e2ae(["list-server", "--config", str(tmp_path / "none.toml")])
    assert result.returncode == 2 and b"cannot read" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_store_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path)
    (tmp_path / "lists.sqlite").write_bytes(b"")
    (tmp_path / "lists.sqlite").chmod(0o644)
    result = run_e2ae(["list-server", "--config", str(path)])
    assert result.returncode == 2 and b"chmod 600" in result.stderr
    assert b"Traceback" not in result.stderr
