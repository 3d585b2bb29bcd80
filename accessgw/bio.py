"""Moving bytes through a pyOpenSSL memory-BIO connection with few Python calls (no Twisted).

pyOpenSSL's API costs a Python round trip per TLS record and says "nothing more" by raising an
exception: ``recv`` returns one record's plaintext at a time and ends with ``WantReadError``,
``bio_read`` ends the same way. A relay moving a socket read of 128 KiB (eight records) pays
that on every read, and its memory BIOs keep the largest amount they ever held. The helpers
here do the loops in C calls of the binding pyOpenSSL is itself built on (``OpenSSL._util``,
cryptography's OpenSSL binding) into one scratch buffer, and can give a connection fresh,
empty BIOs. That binding is not pyOpenSSL's public API: if it is missing or lacks a function
(another pyOpenSSL), ``FAST`` is false and every helper falls back to the public calls, with
the same results, more CPU, and BIOs that are never renewed.

The fast path also uses private attributes of :class:`OpenSSL.SSL.Connection` (pyOpenSSL, not
Twisted: the AGW drives its own memory-BIO connection rather than Twisted's TLS wrapper):
``_ssl`` (the ``SSL *``), ``_into_ssl`` and ``_from_ssl`` (the ``BIO *`` that ``bio_write``
writes into and ``bio_read`` reads from). No public API does these jobs: ``recv`` and
``recv_into`` give one record's plaintext per call, they and ``bio_read`` end every loop with
an exception, and nothing public replaces a connection's BIOs.
tests/accessgw/test_gateway_private.py checks the binding and these attributes against the
installed pyOpenSSL, so that a change fails loudly there instead of silently falling back (or
worse) here.

Single-threaded use only (the scratch buffer is shared): the reactor thread.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL

#: Largest plaintext one TLS record carries.
PLAIN_SIZE = 16384
_SCRATCH_SIZE = 256 * 1024
_NEEDED = (
    "SSL_read",
    "SSL_get_error",
    "BIO_read",
    "BIO_new",
    "BIO_s_mem",
    "BIO_free",
    "SSL_set_bio",
    "ERR_peek_error",
    "SSL_ERROR_WANT_READ",
    "SSL_ERROR_ZERO_RETURN",
)

_lib: Any
_ffi: Any
_raise_queue: Any
try:
    from OpenSSL._util import exception_from_error_queue as _raise_queue
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    FAST = all(hasattr(_lib, name) for name in _NEEDED)
except ImportError:  # pragma: no cover - depends on the pyOpenSSL version
    FAST = False

_scratch: Any = _ffi.new("char[]", _SCRATCH_SIZE) if FAST else None


def _usable(tls: SSL.Connection) -> bool:
    # Private pyOpenSSL attributes (see the module docstring): read here, used below.
    return FAST and getattr(tls, "_from_ssl", None) is not None and hasattr(tls, "_ssl")


def read_plaintext(tls: SSL.Connection) -> tuple[bytes, bool]:
    """Decrypt all that the read BIO holds: ``(plaintext, eof)``; ``eof`` when the peer's
    close_notify came. Raises :class:`OpenSSL.SSL.Error` on a TLS error."""
    if not _usable(tls):
        return _read_plaintext_api(tls)
    ssl = tls._ssl  # type: ignore[attr-defined]
    buf = _scratch
    chunks: list[bytes] = []
    used = 0
    while True:
        n = _lib.SSL_read(ssl, buf + used, _SCRATCH_SIZE - used)
        if n > 0:
            used += n
            if _SCRATCH_SIZE - used < PLAIN_SIZE:
                chunks.append(_ffi.buffer(buf, used)[:])
                used = 0
            continue
        code = _lib.SSL_get_error(ssl, n)
        if used:
            chunks.append(_ffi.buffer(buf, used)[:])
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if code == _lib.SSL_ERROR_WANT_READ:
            return data, False
        if code == _lib.SSL_ERROR_ZERO_RETURN:
            return data, True
        if _lib.ERR_peek_error():
            _raise_queue(SSL.Error)
        raise SSL.Error([("SSL routines", "SSL_read", f"SSL_get_error {code}")])


def _read_plaintext_api(tls: SSL.Connection) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    eof = False
    while True:
        try:
            chunks.append(tls.recv(PLAIN_SIZE))
        except SSL.WantReadError:
            break
        except SSL.ZeroReturnError:
            eof = True
            break
    return b"".join(chunks), eof


def drain_output(tls: SSL.Connection) -> bytes:
    """Everything OpenSSL has written into the write BIO (ciphertext to send), now empty."""
    if not _usable(tls):
        return _drain_output_api(tls)
    bio = tls._from_ssl  # type: ignore[attr-defined]
    out: list[bytes] = []
    while True:
        n = _lib.BIO_read(bio, _scratch, _SCRATCH_SIZE)
        if n <= 0:
            break
        out.append(_ffi.buffer(_scratch, n)[:])
    return out[0] if len(out) == 1 else b"".join(out)


def _drain_output_api(tls: SSL.Connection) -> bytes:
    out: list[bytes] = []
    while True:
        try:
            data = tls.bio_read(_SCRATCH_SIZE // 4)
        except SSL.WantReadError:
            break
        if not data:
            break
        out.append(data)
    return b"".join(out)


def renew_bios(tls: SSL.Connection) -> bool:
    """Give ``tls`` new, empty memory BIOs (OpenSSL frees the old ones and the largest buffer
    they grew to). Only when both are empty: nothing waits in the read BIO (the last read
    wanted more), everything in the write BIO has been drained. False if not possible."""
    if not _usable(tls):
        return False
    into = _lib.BIO_new(_lib.BIO_s_mem())
    out = _lib.BIO_new(_lib.BIO_s_mem())
    if into == _ffi.NULL or out == _ffi.NULL:  # pragma: no cover - out of memory
        for bio in (into, out):
            if bio != _ffi.NULL:
                _lib.BIO_free(bio)
        return False
    _lib.SSL_set_bio(tls._ssl, into, out)  # type: ignore[attr-defined]
    # bio_write and bio_read go through these attributes: they must follow the new BIOs.
    tls._into_ssl, tls._from_ssl = into, out  # type: ignore[attr-defined]
    return True
