"""The 3GPP TLS profile contexts, checked with in-memory handshakes and with openssl s_client."""

from __future__ import annotations

import datetime
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from OpenSSL import SSL

import certs
from certs.tls import KeyLogWriter, make_context, peer_certificate_der
from tests.conftest import require_tool

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def server_id() -> certs.CertAndKey:
    return certs.generate("agw", now=NOW)


@pytest.fixture(scope="module")
def client_id() -> certs.CertAndKey:
    return certs.generate("ue", key_type="rsa-2048", now=NOW)


def _pump(a: SSL.Connection, b: SSL.Connection) -> None:
    """Run an in-memory handshake between two BIO connections."""
    done = {id(a): False, id(b): False}
    for _ in range(50):
        for conn in (a, b):
            if not done[id(conn)]:
                try:
                    conn.do_handshake()
                    done[id(conn)] = True
                except SSL.WantReadError:
                    pass
        for src, dst in ((a, b), (b, a)):
            try:
                data = src.bio_read(65536)
            except SSL.WantReadError:
                continue
            dst.bio_write(data)
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_mutual_handshake_and_peer_der(
    server_id: certs.CertAndKey, client_id: certs.CertAndKey, tmp_path: Path
) -> None:
    keylog = KeyLogWriter(tmp_path / "keys.log")
    srv = SSL.Connection(make_context(server_id, "server", keylog=keylog), None)
    cli = SSL.Connection(make_context(client_id, "client"), None)
    srv.set_accept_state()
    cli.set_connect_state()
    _pump(cli, srv)
    assert peer_certificate_der(srv) == client_id.cert_der
    assert peer_certificate_der(cli) == server_id.cert_der
    assert srv.get_protocol_version_name() == "TLSv1.3"
    assert b"CLIENT_TRAFFIC_SECRET_0" in (tmp_path / "keys.log").read_bytes()
    assert (tmp_path / "keys.log").stat().st_mode & 0o077 == 0  # secrets: owner only


def _serve_once(ctx: SSL.Context) -> tuple[int, threading.Thread, dict[str, object]]:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    result: dict[str, object] = {}

    def run() -> None:
        conn, _ = lsock.accept()
        conn.setblocking(True)
        tls = SSL.Connection(ctx, conn)
        tls.set_accept_state()
        try:
            tls.do_handshake()
            result["ok"] = True
            result["peer"] = peer_certificate_der(tls)
            result["cipher"] = tls.get_cipher_name()
        except SSL.Error as exc:
            result["ok"] = False
            result["error"] = exc
        finally:
            conn.close()
            lsock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread, result


def _s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    openssl = require_tool("openssl")
    return subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )


def _write(pair: certs.CertAndKey, tmp_path: Path) -> tuple[str, str]:
    crt, key = certs.write(pair, tmp_path, force=True)
    return str(crt), str(key)


def test_s_client_with_certificate_accepted(
    server_id: certs.CertAndKey, client_id: certs.CertAndKey, tmp_path: Path
) -> None:
    crt, key = _write(client_id, tmp_path)
    port, thread, result = _serve_once(make_context(server_id, "server"))
    _s_client(port, "-cert", crt, "-key", key)
    thread.join(10)
    assert result["ok"] is True
    assert result["peer"] == client_id.cert_der


@pytest.mark.parametrize(
    "args",
    [
        [],  # no client certificate
        ["-tls1_1"],
        ["-tls1_2", "-cipher", "NULL-SHA256:@SECLEVEL=0"],
        ["-tls1_2", "-cipher", "AES128-SHA"],  # no ECDHE, CBC
        ["-tls1_2", "-cipher", "ADH-AES128-GCM-SHA256:@SECLEVEL=0"],
    ],
    ids=["no-cert", "tls1.1", "null-cipher", "rsa-kx-cbc", "anonymous"],
)
def test_s_client_refused(
    server_id: certs.CertAndKey, client_id: certs.CertAndKey, tmp_path: Path, args: list[str]
) -> None:
    crt, key = _write(client_id, tmp_path)
    cert_args = [] if not args else ["-cert", crt, "-key", key]
    port, thread, result = _serve_once(make_context(server_id, "server"))
    _s_client(port, *cert_args, *args)
    thread.join(10)
    assert result["ok"] is False, result
