"""TLS-PSK contexts (TS 33.328 Annex H): in-memory handshakes, what goes on the wire, the refused
suites, the private pyOpenSSL binding they rely on, and openssl s_server / s_client as peers."""

from __future__ import annotations

import gc
import re
import socket
import struct
import subprocess
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import OpenSSL
import pytest
from OpenSSL import SSL

from certs import psk as psk_module
from certs.psk import (
    ALLOWED_PSK_CIPHERS,
    DEFAULT_PSK_CIPHERS,
    TLS13_PSK_CIPHERSUITE,
    psk_context,
)
from certs.tls import KeyLogWriter
from tests.conftest import require_tool

KEY = bytes(range(16))  # a 128-bit TEK
OTHER_KEY = bytes(range(1, 17))
USER = "certs/psk.py (psk_context: the PSK callbacks, pyOpenSSL having no PSK API)"

HANDSHAKE, APPLICATION_DATA = 0x16, 0x17
SERVER_HELLO, CERTIFICATE, SERVER_KEY_EXCHANGE, SERVER_HELLO_DONE = 2, 11, 12, 14
CLIENT_KEY_EXCHANGE = 16


# -- the private binding (fails loudly if a pyOpenSSL release changes it) --


def _require(ok: object, attribute: str, what: str) -> None:
    if not ok:
        pytest.fail(
            f"{attribute} {what}; {USER} relies on it (pyOpenSSL {OpenSSL.__version__},"
            f" {SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()})",
            pytrace=False,
        )


def test_binding_has_the_psk_callbacks() -> None:
    try:
        from OpenSSL import _util
    except ImportError:
        pytest.fail(f"OpenSSL._util cannot be imported; {USER} relies on it", pytrace=False)
    for name in ("ffi", "lib"):
        _require(hasattr(_util, name), f"OpenSSL._util.{name}", "is gone")
    ffi, lib = _util.ffi, _util.lib
    _require(getattr(lib, "Cryptography_HAS_PSK", 0), "OpenSSL._util.lib", "has no PSK")
    for name in psk_module.NEEDED:
        _require(hasattr(lib, name), f"OpenSSL._util.lib.{name}", "is gone")
    for name, callback_type in (
        ("SSL_CTX_set_psk_server_callback", psk_module._SERVER_CB),
        ("SSL_CTX_set_psk_client_callback", psk_module._CLIENT_CB),
    ):
        _require(
            ffi.typeof(getattr(lib, name)).args[1] == ffi.typeof(callback_type),
            f"OpenSSL._util.lib.{name}",
            f"no longer takes a callback of type {callback_type}",
        )
    raw = getattr(SSL.Context(SSL.TLS_SERVER_METHOD), "_context", None)
    _require(
        isinstance(raw, ffi.CData) and ffi.typeof(raw).cname == "SSL_CTX *" and raw != ffi.NULL,
        "OpenSSL.SSL.Context._context",
        "is no longer the context's SSL_CTX pointer (SSL_CTX *)",
    )


def test_pyopenssl_still_has_no_public_psk_api() -> None:
    public = sorted(
        name
        for cls in (SSL.Context, SSL.Connection)
        for name in dir(cls)
        if "psk" in name.lower() and not name.startswith("_")
    )
    if public:
        pytest.fail(
            f"pyOpenSSL {OpenSSL.__version__} has a public PSK API ({', '.join(public)}):"
            f" {USER.split(' ')[0]} should use it instead of OpenSSL._util",
            pytrace=False,
        )


# -- in-memory handshakes --


class _Wire:
    """Bytes each side wrote, in order (one entry per transfer)."""

    def __init__(self) -> None:
        self.from_client: list[bytes] = []
        self.from_server: list[bytes] = []


def _pump(cli: SSL.Connection, srv: SSL.Connection, wire: _Wire | None = None) -> None:
    """Run an in-memory handshake; raise the first SSL.Error, after passing on the alert."""
    wire = wire or _Wire()
    done = {id(cli): False, id(srv): False}
    error: SSL.Error | None = None
    for _ in range(50):
        for conn in (cli, srv):
            if not done[id(conn)] and error is None:
                try:
                    conn.do_handshake()
                    done[id(conn)] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error as exc:
                    error = exc
        moved = False
        for src, dst, log in ((cli, srv, wire.from_client), (srv, cli, wire.from_server)):
            try:
                data = src.bio_read(65536)
            except SSL.WantReadError:
                continue
            log.append(data)
            dst.bio_write(data)
            moved = True
        if error is not None and not moved:
            raise error
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def _pair(server: SSL.Context, client: SSL.Context) -> tuple[SSL.Connection, SSL.Connection]:
    srv, cli = SSL.Connection(server, None), SSL.Connection(client, None)
    srv.set_accept_state()
    cli.set_connect_state()
    return cli, srv


def _send(src: SSL.Connection, dst: SSL.Connection, data: bytes) -> bytes:
    src.sendall(data)
    dst.bio_write(src.bio_read(65536))
    return dst.recv(65536)


def _records(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        kind, length = data[0], int.from_bytes(data[3:5], "big")
        out.append((kind, data[5 : 5 + length]))
        data = data[5 + length :]
    return out


def _handshake_messages(flights: list[bytes]) -> list[tuple[int, bytes]]:
    """The plaintext handshake messages in ``flights`` (up to the first encrypted record)."""
    body = b""
    for flight in flights:
        for kind, fragment in _records(flight):
            if kind == 0x14:  # ChangeCipherSpec: what follows is encrypted
                return _split_messages(body)
            if kind == HANDSHAKE:
                body += fragment
    return _split_messages(body)


def _split_messages(body: bytes) -> list[tuple[int, bytes]]:
    out = []
    while body:
        length = int.from_bytes(body[1:4], "big")
        out.append((body[0], body[4 : 4 + length]))
        body = body[4 + length :]
    return out


def test_same_key_bytes_pass_both_ways_over_tls12_psk() -> None:
    cli, srv = _pair(psk_context("server", KEY), psk_context("client", KEY))
    _pump(cli, srv)
    for conn in (cli, srv):
        assert conn.get_protocol_version_name() == "TLSv1.2"
        assert conn.get_cipher_name() == DEFAULT_PSK_CIPHERS[0]  # the server's preference
        assert conn.get_peer_certificate() is None
    assert _send(cli, srv, b"MSRP a786hjs2 SEND\r\n") == b"MSRP a786hjs2 SEND\r\n"
    assert _send(srv, cli, b"MSRP a786hjs2 200 OK\r\n") == b"MSRP a786hjs2 200 OK\r\n"


@pytest.mark.parametrize("suite", ALLOWED_PSK_CIPHERS)
def test_each_allowed_suite_negotiates(suite: str) -> None:
    cli, srv = _pair(
        psk_context("server", KEY, ciphers=(suite,)),
        psk_context("client", KEY, ciphers=(suite,)),
    )
    _pump(cli, srv)
    assert srv.get_cipher_name() == cli.get_cipher_name() == suite
    assert _send(cli, srv, b"x" * 5000) == b"x" * 5000


def test_contexts_offer_only_the_psk_suites() -> None:
    for role in ("server", "client"):
        assert SSL.Connection(psk_context(role, KEY)).get_cipher_list() == list(DEFAULT_PSK_CIPHERS)
    ccm = ("PSK-AES256-CCM", "PSK-AES128-GCM-SHA256")
    assert SSL.Connection(psk_context("client", KEY, ciphers=ccm)).get_cipher_list() == list(ccm)
    tls13 = psk_context("client", KEY, identity=b"msrp", tls13=True)
    assert SSL.Connection(tls13).get_cipher_list() == [
        TLS13_PSK_CIPHERSUITE,
        *DEFAULT_PSK_CIPHERS,
    ]


def test_the_profile_options() -> None:
    for role in ("server", "client"):
        ctx = psk_context(role, KEY)
        options = ctx.set_options(0)  # returns the options in force
        for name in ("OP_NO_RENEGOTIATION", "OP_NO_COMPRESSION", "OP_NO_TICKET"):
            assert options & getattr(SSL, name), name
        assert ctx.get_session_cache_mode() == SSL.SESS_CACHE_OFF


def test_identity_is_empty_on_the_wire_and_no_certificate_or_hint_is_sent() -> None:
    seen: list[bytes] = []

    def lookup(identity: bytes) -> bytes:
        seen.append(identity)
        return KEY

    wire = _Wire()
    cli, srv = _pair(psk_context("server", lookup), psk_context("client", KEY))
    _pump(cli, srv, wire)
    assert seen == [b""]
    # The server's flight: ServerHello, ServerHelloDone. No Certificate, no ServerKeyExchange
    # (which would carry an identity hint).
    assert [kind for kind, _ in _handshake_messages(wire.from_server)] == [
        SERVER_HELLO,
        SERVER_HELLO_DONE,
    ]
    client_messages = dict(_handshake_messages(wire.from_client))
    assert CERTIFICATE not in client_messages
    assert client_messages[CLIENT_KEY_EXCHANGE] == b"\x00\x00"  # psk_identity<0..2^16-1>: ""


def test_identity_check_is_what_the_wire_says() -> None:
    """The parser above can fail: a non-empty identity is seen as such."""
    wire = _Wire()
    cli, srv = _pair(
        psk_context("server", KEY, identity=b"alice"),
        psk_context("client", KEY, identity=b"alice"),
    )
    _pump(cli, srv, wire)
    assert dict(_handshake_messages(wire.from_client))[CLIENT_KEY_EXCHANGE] == b"\x00\x05alice"


def _assert_fails_with_alert(
    server: SSL.Context, client: SSL.Context, alert: str
) -> tuple[SSL.Connection, SSL.Connection]:
    cli, srv = _pair(server, client)
    wire = _Wire()
    with pytest.raises(SSL.Error):
        _pump(cli, srv, wire)
    with pytest.raises(SSL.Error, match=alert):  # the peer's alert, as the client read it
        cli.do_handshake()
    # Nothing encrypted under application keys went either way, and nothing can be sent.
    for flight in wire.from_client + wire.from_server:
        assert APPLICATION_DATA not in [kind for kind, _ in _records(flight)]
    with pytest.raises(SSL.Error):
        cli.send(b"secret")
    with pytest.raises(SSL.Error):
        srv.recv(1024)
    return cli, srv


def test_wrong_key_fails_with_an_alert_and_no_application_byte() -> None:
    _assert_fails_with_alert(
        psk_context("server", KEY),
        psk_context("client", OTHER_KEY),
        "alert (bad record mac|decrypt error)",
    )


def test_unknown_identity_is_refused_with_unknown_psk_identity() -> None:
    _assert_fails_with_alert(
        psk_context("server", KEY),
        psk_context("client", KEY, identity=b"Client_identity"),
        "unknown psk identity",
    )


@pytest.mark.parametrize(
    "lookup",
    [lambda identity: None, lambda identity: 1 / 0, lambda identity: b"", lambda i: b"k" * 65],
    ids=["none", "raises", "empty-key", "too-long-key"],
)
def test_a_lookup_that_gives_no_key_refuses(lookup: Callable[[bytes], Any]) -> None:
    _assert_fails_with_alert(
        psk_context("server", lookup), psk_context("client", KEY), "unknown psk identity"
    )


def test_a_lookup_chooses_the_key_by_identity() -> None:
    keys = {b"stream-1": KEY, b"stream-2": OTHER_KEY}
    server = psk_context("server", keys.get)
    for identity, key in keys.items():
        cli, srv = _pair(server, psk_context("client", key, identity=identity))
        _pump(cli, srv)
        assert _send(cli, srv, identity) == identity
    _assert_fails_with_alert(server, psk_context("client", KEY, identity=b"stream-2"), "alert")


def test_a_client_lookup_gets_the_empty_hint() -> None:
    hints: list[bytes] = []

    def lookup(hint: bytes) -> bytes:
        hints.append(hint)
        return KEY

    cli, srv = _pair(psk_context("server", KEY), psk_context("client", lookup))
    _pump(cli, srv)
    assert hints == [b""]


def test_one_key_sets_up_several_sessions_each_a_full_handshake() -> None:
    server, client = psk_context("server", KEY), psk_context("client", KEY)
    for n in range(3):
        cli, srv = _pair(server, client)
        wire = _Wire()
        _pump(cli, srv, wire)
        kinds = [kind for kind, _ in _handshake_messages(wire.from_client)]
        assert CLIENT_KEY_EXCHANGE in kinds  # no abbreviated (resumed) handshake
        assert _send(srv, cli, b"%d" % n) == b"%d" % n


def test_callbacks_live_as_long_as_the_context() -> None:
    def connections() -> tuple[SSL.Connection, SSL.Connection]:
        # Only the Connections keep the contexts (and so their callbacks) alive.
        return _pair(psk_context("server", KEY), psk_context("client", KEY))

    cli, srv = connections()
    gc.collect()
    _pump(cli, srv)
    assert _send(cli, srv, b"after gc") == b"after gc"
    del cli, srv
    ctx = psk_context("server", KEY)
    alive = weakref.ref(ctx)
    gc.collect()
    entries = len(psk_module._REGISTRY)
    del ctx
    gc.collect()
    # The registry neither keeps a context alive nor its callbacks after it.
    assert alive() is None
    assert len(psk_module._REGISTRY) == entries - 1


def test_the_key_is_not_in_a_repr() -> None:
    ctx = psk_context("server", KEY)
    for text in (repr(psk_module._REGISTRY[ctx]), repr(ctx)):
        assert KEY.hex() not in text and repr(KEY) not in text


def test_keylog_gets_the_tls12_secret(tmp_path: Path) -> None:
    keylog = KeyLogWriter(tmp_path / "keys.log")
    cli, srv = _pair(psk_context("server", KEY, keylog=keylog), psk_context("client", KEY))
    _pump(cli, srv)
    assert (tmp_path / "keys.log").read_bytes().startswith(b"CLIENT_RANDOM ")


# -- refused configurations --


@pytest.mark.parametrize(
    "suite",
    [
        "DHE-PSK-AES128-GCM-SHA256",
        "ECDHE-PSK-AES128-CBC-SHA256",
        "ECDHE-PSK-CHACHA20-POLY1305",
        "RSA-PSK-AES128-GCM-SHA256",
        "PSK-NULL-SHA256",
        "ADH-AES128-GCM-SHA256",
        "PSK-AES128-CBC-SHA",
        "PSK-AES256-CBC-SHA384",
        "PSK-CHACHA20-POLY1305",
        "PSK-AES128-CCM8",
        "AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "PSK",
        "PSK-AES128-GCM-SHA256:DHE-PSK-AES128-GCM-SHA256",
    ],
)
@pytest.mark.parametrize("role", ["server", "client"])
def test_a_suite_outside_the_profile_is_refused_by_name(suite: str, role: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(suite))):
        psk_context(role, KEY, ciphers=("PSK-AES128-GCM-SHA256", suite))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"ciphers": ()}, ValueError),
        ({"ciphers": "PSK-AES128-GCM-SHA256"}, ValueError),
        ({"identity": b"a\0b"}, ValueError),
        ({"identity": b"i" * 129}, ValueError),
        ({"identity": "alice"}, TypeError),
        ({"psk": b""}, ValueError),
        ({"psk": b"k" * 65}, ValueError),
        ({"psk": "00" * 16}, TypeError),
        ({"role": "peer"}, ValueError),
        ({"tls13": True}, ValueError),  # the empty identity cannot go into TLS 1.3
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    args: dict[str, Any] = {"role": "client", "psk": KEY, **kwargs}
    with pytest.raises(error):
        psk_context(args.pop("role"), args.pop("psk"), **args)


def test_the_limits_themselves_are_accepted() -> None:
    psk_context("client", b"k" * 64, identity=b"i" * 128)
    psk_context("server", b"k")


# -- TLS 1.3 external PSK (opt-in) --


def test_tls13_external_psk() -> None:
    cli, srv = _pair(
        psk_context("server", KEY, identity=b"msrp", tls13=True),
        psk_context("client", KEY, identity=b"msrp", tls13=True),
    )
    _pump(cli, srv)
    for conn in (cli, srv):
        assert conn.get_protocol_version_name() == "TLSv1.3"
        assert conn.get_cipher_name() == TLS13_PSK_CIPHERSUITE
        assert conn.get_peer_certificate() is None
    assert _send(cli, srv, b"BFCP") == b"BFCP"
    assert _send(srv, cli, b"PFCB") == b"PFCB"


def _extensions(server_hello: bytes) -> list[int]:
    at = 2 + 32
    at += 1 + server_hello[at] + 2 + 1  # session id, cipher suite, compression
    end, at = at + 2 + int.from_bytes(server_hello[at : at + 2], "big"), at + 2
    types = []
    while at < end:
        types.append(int.from_bytes(server_hello[at : at + 2], "big"))
        at += 4 + int.from_bytes(server_hello[at + 2 : at + 4], "big")
    return types


def test_tls13_runs_the_psk_with_ecdhe_and_tls12_without() -> None:
    """What the module's docstring says: psk_dhe_ke in TLS 1.3, plain PSK in TLS 1.2."""
    pre_shared_key, key_share = 41, 51
    seen = {}
    for tls13 in (True, False):
        wire = _Wire()
        cli, srv = _pair(
            psk_context("server", KEY, identity=b"msrp", tls13=tls13),
            psk_context("client", KEY, identity=b"msrp", tls13=tls13),
        )
        _pump(cli, srv, wire)
        kind, hello = _split_messages(_records(wire.from_server[0])[0][1])[0]
        assert kind == SERVER_HELLO
        seen[tls13] = _extensions(hello)
    assert {pre_shared_key, key_share} <= set(seen[True])
    assert pre_shared_key not in seen[False] and key_share not in seen[False]


def test_tls13_wrong_key_fails() -> None:
    cli, srv = _pair(
        psk_context("server", KEY, identity=b"msrp", tls13=True),
        psk_context("client", OTHER_KEY, identity=b"msrp", tls13=True),
    )
    with pytest.raises(SSL.Error):
        _pump(cli, srv)
    with pytest.raises(SSL.Error):
        srv.recv(1024)


def test_tls13_client_falls_back_to_tls12_with_a_tls12_server() -> None:
    cli, srv = _pair(
        psk_context("server", KEY, identity=b"msrp"),
        psk_context("client", KEY, identity=b"msrp", tls13=True),
    )
    _pump(cli, srv)
    assert cli.get_protocol_version_name() == "TLSv1.2"
    assert cli.get_cipher_name() == DEFAULT_PSK_CIPHERS[0]


# -- real peers: openssl s_server and s_client --


class _Output:
    """A process's stdout, read by a thread so that the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.data = bytearray()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            with self._cond:
                self.data += chunk
                self._cond.notify_all()

    def wait_for(self, pattern: bytes, timeout: float = 10) -> re.Match[bytes] | None:
        with self._cond:
            self._cond.wait_for(lambda: re.search(pattern, self.data), timeout)
            return re.search(pattern, self.data)


def _s_server(key: bytes) -> tuple[subprocess.Popen[bytes], _Output, int]:
    openssl = require_tool("openssl")
    proc = subprocess.Popen(
        [
            *(openssl, "s_server", "-psk", key.hex(), "-nocert", "-tls1_2"),
            *("-accept", "127.0.0.1:0", "-naccept", "1"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = _Output(proc)
    accept = out.wait_for(rb"ACCEPT [^\n]*:(\d+)")
    if accept is None:
        proc.kill()
        proc.wait()
        raise AssertionError(f"s_server did not start: {bytes(out.data)!r}")
    return proc, out, int(accept.group(1))


def _blocking_with_timeout(sock: socket.socket, seconds: int = 10) -> None:
    """Blocking, as pyOpenSSL wants, but a read that waits longer fails (no hung test)."""
    sock.setblocking(True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, 0))


def _connect(ctx: SSL.Context, port: int) -> SSL.Connection:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    _blocking_with_timeout(sock)
    tls = SSL.Connection(ctx, sock)
    tls.set_connect_state()
    return tls


def _recv_until(tls: SSL.Connection, token: bytes) -> bytes:
    data = b""
    while token not in data:
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.peer
def test_openssl_s_server_against_our_client() -> None:
    proc, out, port = _s_server(KEY)
    try:
        tls = _connect(psk_context("client", KEY), port)
        tls.do_handshake()
        assert tls.get_protocol_version_name() == "TLSv1.2"
        assert tls.get_cipher_name() in DEFAULT_PSK_CIPHERS
        tls.sendall(b"from-our-client\n")
        assert proc.stdin is not None
        proc.stdin.write(b"from-s-server\n")  # what s_server reads on stdin goes to the client
        proc.stdin.flush()
        assert b"from-s-server\n" in _recv_until(tls, b"from-s-server\n")
        assert out.wait_for(b"from-our-client\n"), bytes(out.data)
        # s_server warns that the identity is not its default one: it got the empty string.
        assert b"(got '' expected" in out.data, bytes(out.data)
        tls.shutdown()
        tls.sock_shutdown(socket.SHUT_RDWR)
        tls.close()
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.peer
def test_openssl_s_server_with_another_key_fails_our_client() -> None:
    proc, out, port = _s_server(OTHER_KEY)
    try:
        tls = _connect(psk_context("client", KEY), port)
        with pytest.raises(SSL.Error, match="alert"):
            tls.do_handshake()
        with pytest.raises(SSL.Error):
            tls.sendall(b"from-our-client\n")
        tls.close()
        proc.wait(10)
        assert b"from-our-client" not in out.data
    finally:
        proc.kill()
        proc.wait()


def _serve_once(ctx: SSL.Context) -> tuple[int, threading.Thread, dict[str, Any]]:
    """Our server: one connection; reads a line, answers with one, closes."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(20)
    port = lsock.getsockname()[1]
    result: dict[str, Any] = {"ok": False}

    def run() -> None:
        try:
            conn, _ = lsock.accept()
        finally:
            lsock.close()
        _blocking_with_timeout(conn)
        tls = SSL.Connection(ctx, conn)
        tls.set_accept_state()
        try:
            tls.do_handshake()
            result["version"] = tls.get_protocol_version_name()
            result["cipher"] = tls.get_cipher_name()
            result["received"] = _recv_until(tls, b"\n")
            tls.sendall(b"from-our-server\n")
            result["ok"] = True
            tls.shutdown()
        except SSL.Error as exc:
            result["error"] = exc
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread, result


def _s_client(port: int, key: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    openssl = require_tool("openssl")
    return subprocess.run(
        [
            *(openssl, "s_client", "-connect", f"127.0.0.1:{port}"),
            *("-psk", key.hex(), "-tls1_2", "-quiet", *args),
        ],
        input=b"from-s-client\n",
        capture_output=True,
        timeout=20,
        check=False,
    )


@pytest.mark.peer
def test_openssl_s_client_against_our_server() -> None:
    port, thread, result = _serve_once(psk_context("server", KEY))
    done = _s_client(port, KEY, "-psk_identity", "")
    thread.join(10)
    assert result["ok"] is True, result
    assert result["version"] == "TLSv1.2"
    assert result["cipher"] in DEFAULT_PSK_CIPHERS
    assert result["received"] == b"from-s-client\n"
    assert b"from-our-server\n" in done.stdout, done.stdout + done.stderr


@pytest.mark.peer
@pytest.mark.parametrize(
    ("key", "args"),
    [
        (OTHER_KEY, ["-psk_identity", ""]),
        (KEY, []),  # s_client's default identity, "Client_identity": not what H.2 says
        (KEY, ["-psk_identity", "", "-cipher", "DHE-PSK-AES128-GCM-SHA256"]),
        (KEY, ["-psk_identity", "", "-cipher", "ECDHE-PSK-AES128-CBC-SHA256"]),
    ],
    ids=["wrong-key", "identity-not-empty", "dhe-psk", "ecdhe-psk"],
)
def test_openssl_s_client_refused(key: bytes, args: list[str]) -> None:
    port, thread, result = _serve_once(psk_context("server", KEY))
    done = _s_client(port, key, *args)
    thread.join(10)
    assert result["ok"] is False, result
    assert "received" not in result
    assert b"from-our-server" not in done.stdout
    assert done.returncode != 0
