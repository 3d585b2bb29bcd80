"""MIKEY (RFC 3830) and MIKEY-TICKET (RFC 6043): a pure codec and the key derivations.

The foundation of the KMS-based (TS 33.328 Annex D, Annex H) protection of TCP-based media:
a lossless codec for MIKEY messages and payloads (:mod:`mikey.message`,
:mod:`mikey.payloads`, type numbers in :mod:`mikey.constants`), the MIKEY PRFs
(:mod:`mikey.prf`) and the key derivations built on them (:mod:`mikey.keys`), among them the
TEK that TS 33.328 Annex H.2 uses as the TLS pre-shared key, and the KEMAC encryption and
message MAC (:mod:`mikey.kemac`). Every decoding failure is a
:class:`mikey.errors.MikeyError` carrying an ERR-payload error number. The package imports
nothing from the rest of the project and no Twisted; docs/kms.md describes it.
"""

from mikey.errors import MikeyError
from mikey.message import Header, Message, check_composition, decode, encode

__all__ = ["Header", "Message", "MikeyError", "check_composition", "decode", "encode"]
