"""pyOpenSSL contexts for TLS-PSK with a key from the KMS (TS 33.328 Annex H, TR 33.829 8.3.1.2).

MSRP and BFCP protected end to end with MIKEY-TICKET run TLS with a pre-shared key: the TEK that
the crypto session of Prot Type TLS yields (Annex H.2). The profile is TS 33.310 Annex E with
the ``TLS_RSA_`` suites replaced by the corresponding ``TLS_PSK_`` suites, and no suite that uses
Diffie-Hellman (H.2). What :func:`psk_context` builds:

- TLS 1.2 with plain PSK key exchange (RFC 4279) only. The list taken: the ``TLS_PSK_``
  counterpart of each AEAD ``TLS_RSA_`` suite, ``TLS_RSA_WITH_AES_128/256_GCM_SHA256/384``
  (RFC 5288) to ``TLS_PSK_WITH_AES_128/256_GCM_SHA256/384`` (RFC 5487; the default,
  ``PSK-AES128-GCM-SHA256``, ``PSK-AES256-GCM-SHA384``) and ``TLS_RSA_WITH_AES_128/256_CCM`` to
  ``TLS_PSK_WITH_AES_128/256_CCM`` (RFC 6655; allowed when asked for). The counterparts of the
  CBC ``TLS_RSA_`` suites (``PSK-AES128-CBC-SHA`` of RFC 4279, ``PSK-AES*-CBC-SHA256/384`` of
  RFC 5487) are left out for the reason :mod:`certs.tls` leaves CBC out: the project's TLS
  profile (TS 33.210 6.2) is AEAD only. (The text of TS 33.310 Annex E is not among the
  project's spec texts; the AEAD-only reading is the project's choice.) ``DHE-PSK``,
  ``ECDHE-PSK`` (Diffie-Hellman, excluded by H.2), ``RSA-PSK`` (a certificate, which H.2 has no
  place for), NULL (TS 33.328 5.3) and every other suite are refused with a ``ValueError``
  naming the suite.
- No certificate on either side, no PSK identity hint (H.2: not used; the server sends no
  ServerKeyExchange), no renegotiation (``OP_NO_RENEGOTIATION``: stricter than the RFC 5746
  renegotiation TS 33.310 Annex E accepts), no compression, no session tickets, no session
  cache: every TLS session the TEK sets up (TR 33.829 8.3.1.2 allows several) is a full PSK
  handshake.
- PSK identity: the empty string by default (H.2: "set to the empty string by the client").
  H.2 lets the server ignore it; a server given one key here expects ``identity`` (compared in
  constant time) so that a peer that does not follow H.2 fails at once with
  ``unknown_psk_identity`` rather than later with a MAC error. A server that must ignore it
  passes a callable that ignores its argument. OpenSSL passes the identity as a C string: it
  cannot hold a NUL byte.
- TLS 1.3 external PSK only with ``tls13=True`` (TLS 1.2 stays allowed). It goes through the
  same OpenSSL callbacks, which tie the key to ``TLS_AES_128_GCM_SHA256`` (the one TLS 1.3 suite
  then offered), and OpenSSL runs it as ``psk_dhe_ke`` (the PSK plus an ECDHE exchange), which H.2
  does not foresee. RFC 8446 4.2.11 forbids the empty identity, so TLS 1.3 needs a non-empty
  ``identity`` that both ends agree on: outside H.2, hence off by default.

pyOpenSSL (26.4) has no PSK API: the callbacks are set through its cffi binding
(``OpenSSL._util.lib``, ``SSL_CTX_set_psk_server_callback`` and
``SSL_CTX_set_psk_client_callback``) on the context's ``SSL_CTX`` (``Context._context``).
``tests/certs/test_psk.py`` checks each of these on this install and fails, naming it, if one
goes or if pyOpenSSL gains a public API to use instead. The key is never logged and never in a
``repr``.
"""

from __future__ import annotations

import hmac
import weakref
from collections.abc import Callable
from typing import Any, Final

from OpenSSL import SSL
from OpenSSL import _util as _openssl_util

from e2ae.tcpmedia import TlsRole

#: The default TLS 1.2 suites (OpenSSL names): TLS_PSK_WITH_AES_128_GCM_SHA256 and
#: TLS_PSK_WITH_AES_256_GCM_SHA384 (RFC 5487).
DEFAULT_PSK_CIPHERS: Final[tuple[str, ...]] = ("PSK-AES128-GCM-SHA256", "PSK-AES256-GCM-SHA384")
#: Every suite ``ciphers`` may name: the defaults and TLS_PSK_WITH_AES_128/256_CCM (RFC 6655).
ALLOWED_PSK_CIPHERS: Final[tuple[str, ...]] = (
    *DEFAULT_PSK_CIPHERS,
    "PSK-AES128-CCM",
    "PSK-AES256-CCM",
)
#: The TLS 1.3 suite with ``tls13=True``: the one OpenSSL binds a callback-given PSK to.
TLS13_PSK_CIPHERSUITE: Final = "TLS_AES_128_GCM_SHA256"
#: RFC 4279 5.3: lengths every implementation supports (identity up to 128, key up to 64 bytes).
MAX_IDENTITY_LEN: Final = 128
MAX_PSK_LEN: Final = 64

#: The private binding this module calls (``OpenSSL._util.lib``); the loud test checks each.
NEEDED: Final[tuple[str, ...]] = (
    "SSL_CTX_set_psk_server_callback",
    "SSL_CTX_set_psk_client_callback",
)
_SERVER_CB: Final = "unsigned int (*)(SSL *, char *, unsigned char *, unsigned int)"
_CLIENT_CB: Final = (
    "unsigned int (*)(SSL *, char *, char *, unsigned int, unsigned char *, unsigned int)"
)

_ffi: Any = _openssl_util.ffi
_lib: Any = _openssl_util.lib

KeyLog = Callable[[SSL.Connection, bytes], None]
#: A key, or a function from what the peer sent (a server: the client's PSK identity; a client:
#: the server's identity hint, empty under H.2) to the key, ``None`` to refuse the handshake.
PskSource = bytes | Callable[[bytes], bytes | None]


class _PskCallbacks:
    """The cffi callbacks of one context and what they answer with; lives as long as the
    context (``_REGISTRY``), since OpenSSL calls them for every connection made from it."""

    __slots__ = ("_key", "_lookup", "callback", "identity")

    def __init__(self, role: TlsRole, psk: PskSource, identity: bytes) -> None:
        self.identity = identity
        if isinstance(psk, bytes):
            self._key: bytes | None = psk
            self._lookup: Callable[[bytes], bytes | None] | None = None
        else:
            self._key = None
            self._lookup = psk
        if role == "server":
            self.callback: Any = _ffi.callback(_SERVER_CB, self._server)
        else:
            self.callback = _ffi.callback(_CLIENT_CB, self._client)

    def __repr__(self) -> str:
        return "<PSK callbacks (key not shown)>"

    def _key_for(self, received: bytes, *, check_identity: bool) -> bytes | None:
        if self._lookup is not None:
            return self._lookup(received)
        if check_identity and not hmac.compare_digest(received, self.identity):
            return None
        return self._key

    @staticmethod
    def _put(key: bytes | None, out: Any, max_len: int) -> int:
        if not isinstance(key, bytes) or not 0 < len(key) <= min(max_len, MAX_PSK_LEN):
            return 0
        _ffi.memmove(out, key, len(key))
        return len(key)

    def _server(self, ssl: Any, identity: Any, out: Any, max_len: int) -> int:
        # Any failure, a raising lookup included, is 0: OpenSSL then refuses the handshake
        # with unknown_psk_identity. Nothing about the key or the identity is logged.
        try:
            received = b"" if identity == _ffi.NULL else bytes(_ffi.string(identity))
            return self._put(self._key_for(received, check_identity=True), out, max_len)
        except Exception:
            return 0

    def _client(
        self,
        ssl: Any,
        hint: Any,
        identity_out: Any,
        max_identity_len: int,
        out: Any,
        max_len: int,
    ) -> int:
        try:
            if len(self.identity) > max_identity_len:
                return 0
            received = b"" if hint == _ffi.NULL else bytes(_ffi.string(hint))
            key = self._key_for(received, check_identity=False)
            length = self._put(key, out, max_len)
            if length:
                _ffi.memmove(identity_out, self.identity + b"\0", len(self.identity) + 1)
            return length
        except Exception:
            return 0


# Context -> its callbacks, for as long as the context lives (a Connection holds its Context).
_REGISTRY: weakref.WeakKeyDictionary[SSL.Context, _PskCallbacks] = weakref.WeakKeyDictionary()


def _check_ciphers(ciphers: tuple[str, ...]) -> str:
    if isinstance(ciphers, str) or not ciphers:
        raise ValueError("ciphers must be a non-empty tuple of suite names")
    for suite in ciphers:
        if suite not in ALLOWED_PSK_CIPHERS:
            raise ValueError(
                f"cipher suite {suite!r} is not allowed for TLS-PSK (TS 33.328 Annex H);"
                f" allowed: {', '.join(ALLOWED_PSK_CIPHERS)}"
            )
    return ":".join(ciphers)


def psk_context(
    role: TlsRole,
    psk: PskSource,
    *,
    identity: bytes = b"",
    ciphers: tuple[str, ...] = DEFAULT_PSK_CIPHERS,
    tls13: bool = False,
    keylog: KeyLog | None = None,
) -> SSL.Context:
    """A TLS-PSK context for ``role`` whose pre-shared key is ``psk`` (the TEK).

    ``psk`` is the key, or a function that gives it (see :data:`PskSource`): a server's gets
    the client's PSK identity, a client's the server's identity hint. ``identity`` is what a
    client sends and what a server given a key expects (default empty, as H.2 says). ``ciphers``
    is an ordered subset of :data:`ALLOWED_PSK_CIPHERS`; anything else is a ``ValueError``
    naming it. ``tls13=True`` adds TLS 1.3 external PSK (see the module's docstring; a non-empty
    ``identity`` is then required wherever it is used). ``keylog`` as in
    :func:`certs.tls.make_context`."""
    if role not in ("server", "client"):
        raise ValueError(f"role must be 'server' or 'client', not {role!r}")
    if isinstance(psk, bytes):
        if not 0 < len(psk) <= MAX_PSK_LEN:
            raise ValueError(f"the PSK must be 1 to {MAX_PSK_LEN} bytes")
    elif not callable(psk):
        raise TypeError("psk must be bytes or a callable giving bytes")
    if not isinstance(identity, bytes):
        raise TypeError("identity must be bytes")
    if len(identity) > MAX_IDENTITY_LEN or b"\0" in identity:
        raise ValueError(f"the PSK identity must be at most {MAX_IDENTITY_LEN} bytes, no NUL")
    if tls13 and not identity and (role == "client" or isinstance(psk, bytes)):
        raise ValueError(
            "TLS 1.3 needs a non-empty PSK identity (RFC 8446 4.2.11), which Annex H does not"
            " give: pass identity=... agreed by both ends, or leave tls13 off"
        )
    cipher_list = _check_ciphers(ciphers)
    method = SSL.TLS_SERVER_METHOD if role == "server" else SSL.TLS_CLIENT_METHOD
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION if tls13 else SSL.TLS1_2_VERSION)
    ctx.set_options(
        SSL.OP_NO_RENEGOTIATION
        | SSL.OP_NO_COMPRESSION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_NO_TICKET
    )
    ctx.set_cipher_list(cipher_list.encode())
    ctx.set_tls13_ciphersuites(TLS13_PSK_CIPHERSUITE.encode() if tls13 else b"")
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    callbacks = _PskCallbacks(role, psk, identity)
    raw_ctx = ctx._context  # the SSL_CTX *: no public accessor
    if role == "server":
        _lib.SSL_CTX_set_psk_server_callback(raw_ctx, callbacks.callback)
    else:
        _lib.SSL_CTX_set_psk_client_callback(raw_ctx, callbacks.callback)
    _REGISTRY[ctx] = callbacks
    if keylog is not None:
        ctx.set_keylog_callback(keylog)
    return ctx
