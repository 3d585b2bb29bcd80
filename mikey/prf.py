"""The MIKEY pseudo-random functions.

MIKEY-1 (RFC 3830 §4.1.2), PRF func 0::

    P(s, label, m) = HMAC(s, A_1 || label) || HMAC(s, A_2 || label) || ... || HMAC(s, A_m || label)
    A_0 = label,  A_i = HMAC(s, A_(i-1))                       (HMAC-SHA-1)

    PRF(inkey, label) = P(s_1, label, m) XOR P(s_2, label, m) XOR ... XOR P(s_n, label, m)

where s_1..s_n are the 256-bit pieces of ``inkey`` (the last may be shorter),
n = ceil(inkey_len / 256), m = ceil(outkey_len / 160), and the result is truncated to
``outkey_len`` bits.

PRF-HMAC-SHA-256 (RFC 6043 §6.1), PRF func 1: the same construction with HMAC-SHA-256, so
m = ceil(outkey_len / 256); the inkey is still cut into 256-bit pieces. (This is the project's
reading of RFC 6043; the inkey piece size is the point least certain.)

Output lengths here are in bytes; every MIKEY key length is a whole number of bytes.
"""

from __future__ import annotations

import hmac

from mikey.constants import PrfFunc

#: Size of the inkey pieces s_i, in bytes (256 bits).
INKEY_PIECE = 32

_HASH: dict[PrfFunc, tuple[str, int]] = {
    PrfFunc.MIKEY_1: ("sha1", 20),
    PrfFunc.PRF_HMAC_SHA_256: ("sha256", 32),
}


def p_function(s: bytes, label: bytes, m: int, func: PrfFunc = PrfFunc.MIKEY_1) -> bytes:
    """P(s, label, m): m HMAC outputs chained through A_i."""
    name, _ = _HASH[func]
    out = bytearray()
    a = label
    for _ in range(m):
        a = hmac.digest(s, a, name)
        out += hmac.digest(s, a + label, name)
    return bytes(out)


def prf(inkey: bytes, label: bytes, out_len: int, func: PrfFunc = PrfFunc.MIKEY_1) -> bytes:
    """``out_len`` bytes of PRF(inkey, label) with the PRF named by ``func``."""
    if not inkey:
        raise ValueError("the PRF needs a non-empty inkey")
    if out_len < 0:
        raise ValueError("out_len must not be negative")
    func = PrfFunc(func)
    _, size = _HASH[func]
    m = -(-out_len // size)
    acc = bytes(m * size)
    for i in range(0, len(inkey), INKEY_PIECE):
        piece = p_function(inkey[i : i + INKEY_PIECE], label, m, func)
        acc = bytes(x ^ y for x, y in zip(acc, piece, strict=True))
    return acc[:out_len]
