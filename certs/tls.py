"""pyOpenSSL contexts for the 3GPP TLS profile (TS 33.210 section 6.2, TS 33.328 section 5.3).

Used by every TLS endpoint of the lab: the AGW access side, the UE simulators and the Iq link.

- TLS 1.2 and 1.3 only; ECDHE key exchange (OpenSSL's default groups); AEAD suites only (no
  NULL, anonymous, export, RC4, 3DES, CBC); no renegotiation at all (``OP_NO_RENEGOTIATION``;
  TLS 1.3 has none anyway).
- Mutual certificates: a server requests and requires a client certificate, a client sends its
  own. No CA judges the chain (self-signed certificates are the norm): the verify callback accepts
  any presented certificate, and the caller must compare its fingerprint with the pinned ones
  (:func:`peer_certificate_der` + :func:`certs.matching_fingerprint`) once the handshake
  completes and before any application byte is used.
- Optional NSS key log (``SSLKEYLOGFILE`` format) so that Wireshark can decrypt a lab run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from OpenSSL import SSL, crypto

from certs.generate import CertAndKey
from e2ae.tcpmedia import TlsRole

#: TLS 1.2 suites allowed by the profile: ECDHE, AEAD only.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
#: TLS 1.3 suites (all AEAD).
TLS13_CIPHERSUITES = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"


class KeyLogWriter:
    """Appends NSS key log lines to a file; safe to share between contexts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, conn: SSL.Connection, line: bytes) -> None:
        with self._lock:
            # The lines are session secrets: the file is made readable by its owner only.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as fh:
                fh.write(line + b"\n")


def _accept_any_certificate(
    conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
) -> bool:
    # Trust comes from the fingerprint pinned in signalling, checked after the handshake;
    # the chain itself (self-signed) is not judged here.
    return True


def make_context(
    identity: CertAndKey,
    role: TlsRole,
    *,
    keylog: Callable[[SSL.Connection, bytes], None] | None = None,
    min_version: int = SSL.TLS1_2_VERSION,
    present_certificate: bool = True,
    verify: Callable[[SSL.Connection, crypto.X509, int, int, int], bool] = _accept_any_certificate,
) -> SSL.Context:
    """A context of the 3GPP profile for ``role`` presenting ``identity``.

    The peer must present a certificate (a server fails the handshake otherwise).
    ``present_certificate=False`` leaves ``identity`` out: a client that misbehaves on purpose
    (the lab's "send no certificate" knob); a server needs its certificate to handshake.
    ``verify`` is the context's verify callback (default: accept any certificate, for the
    caller to check the fingerprint after the handshake); a pinning endpoint passes its own to
    refuse a wrong certificate with an alert during the handshake."""
    method = SSL.TLS_SERVER_METHOD if role == "server" else SSL.TLS_CLIENT_METHOD
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(max(min_version, SSL.TLS1_2_VERSION))
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_options(
        SSL.OP_NO_RENEGOTIATION
        | SSL.OP_NO_COMPRESSION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_NO_TICKET
    )
    ctx.set_cipher_list(TLS12_CIPHERS.encode())
    ctx.set_tls13_ciphersuites(TLS13_CIPHERSUITES.encode())
    if present_certificate:
        ctx.use_certificate(identity.cert)
        ctx.use_privatekey(identity.key)
        ctx.check_privatekey()
    ctx.set_verify(
        SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE,
        verify,
    )
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if keylog is not None:
        ctx.set_keylog_callback(keylog)
    return ctx


def peer_certificate_der(conn: SSL.Connection) -> bytes | None:
    """DER of the certificate the peer presented, or ``None`` if it presented none.

    (Straight from OpenSSL: a third of the time of a round trip through ``cryptography``.)"""
    cert = conn.get_peer_certificate()
    if cert is None:
        return None
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
