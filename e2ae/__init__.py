"""Foundations that every network element and the lab share.

The lowest layer of the project: logging setup (:mod:`e2ae.logsetup`), HOST:PORT parsing
(:mod:`e2ae.address`), TOML file reading (:mod:`e2ae.tomlfile`) and the MSRP (RFC 4975) and
BFCP (RFC 8855) framing cores (:mod:`e2ae.msrp`, :mod:`e2ae.bfcp`). It imports no element
package (``pcscf``, ``accessgw``, ``iq``) and not ``lab``, so any of them may import it: the
P-CSCF and the AGW log the same way, and a media element (an MSRP relay, a conference media
processor) frames MSRP and BFCP with the code the lab's UEs use. docs/architecture.md draws
the layers.
"""
