"""accessgw.bio: moving bytes through memory-BIO TLS connections, fast path and public API."""

from __future__ import annotations

import datetime
import os

import pytest
from OpenSSL import SSL

import accessgw.bio as bio
import certs
from certs.tls import make_context


def _move(src: SSL.Connection, dst: SSL.Connection) -> int:
    data = bio.drain_output(src)
    if data:
        dst.bio_write(data)
    return len(data)


def _pair() -> tuple[SSL.Connection, SSL.Connection]:
    now = datetime.datetime.now(datetime.UTC)
    server = SSL.Connection(make_context(certs.generate("agw", now=now), "server"), None)
    client = SSL.Connection(make_context(certs.generate("ue", now=now), "client"), None)
    server.set_accept_state()
    client.set_connect_state()
    done = {"server": False, "client": False}
    for _ in range(10):
        for name, conn in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    conn.do_handshake()
                    done[name] = True
                except SSL.WantReadError:
                    pass
        _move(client, server)
        _move(server, client)
        if all(done.values()):
            break
    assert all(done.values())
    bio.read_plaintext(client)  # the server's post-handshake messages
    return server, client


@pytest.fixture(params=["fast", "public-api"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "fast":
        if not bio.FAST:
            pytest.skip("this pyOpenSSL has no usable binding")
    else:
        monkeypatch.setattr(bio, "FAST", False)
    return str(request.param)


def test_everything_fed_comes_out_in_one_piece_then_eof(mode: str) -> None:
    server, client = _pair()
    payload = os.urandom(700_000)  # more records than the scratch buffer holds
    client.sendall(payload)
    assert _move(client, server) > len(payload)
    data, eof = bio.read_plaintext(server)
    assert data == payload and not eof
    assert bio.read_plaintext(server) == (b"", False)
    client.shutdown()
    _move(client, server)
    assert bio.read_plaintext(server) == (b"", True)


def test_other_direction_and_renewed_bios_keep_the_session(mode: str) -> None:
    server, client = _pair()
    server.sendall(b"a" * 100_000)
    out = bio.drain_output(server)
    assert len(out) > 100_000 and bio.drain_output(server) == b""
    client.bio_write(out)
    assert bio.read_plaintext(client) == (b"a" * 100_000, False)
    assert bio.renew_bios(server) is (mode == "fast")
    client.sendall(b"after renewal")
    _move(client, server)
    assert bio.read_plaintext(server) == (b"after renewal", False)
    server.sendall(b"reply")
    _move(server, client)
    assert bio.read_plaintext(client) == (b"reply", False)


def test_a_corrupted_record_is_a_tls_error(mode: str) -> None:
    server, client = _pair()
    client.sendall(b"x" * 1000)
    record = bytearray(bio.drain_output(client))
    record[-1] ^= 0xFF  # the AEAD tag no longer matches
    server.bio_write(bytes(record))
    with pytest.raises(SSL.Error) as info:
        bio.read_plaintext(server)
    assert not isinstance(info.value, SSL.WantReadError | SSL.ZeroReturnError)
