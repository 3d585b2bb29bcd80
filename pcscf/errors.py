"""Errors of the P-CSCF (IMS-ALG) cores: the SDP model and the e2ae rewrite.

Split as h11 does. :class:`RemotePcscfError` is something a peer sent that is wrong (malformed
SDP, an e2ae request without a usable fingerprint, an answer that does not fit its offer): the
proxy turns it into a SIP 4xx (488 Not Acceptable Here) and carries on with other calls.
:class:`LocalPcscfError` is something we were asked to do that cannot be done (a missing AGW
reservation, a bad port base): a bug or a bad configuration.
"""

from __future__ import annotations


class PcscfError(Exception):
    """Root of every error raised by the P-CSCF cores."""


class RemotePcscfError(PcscfError, ValueError):
    """Input from a peer (UE or core) cannot be accepted."""


class LocalPcscfError(PcscfError, ValueError):
    """A request from our own code or configuration cannot be satisfied."""


class SdpError(RemotePcscfError):
    """Malformed SDP. ``line`` is the 1-based line number, ``reason`` says what is wrong."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class RemoteRewriteError(RemotePcscfError):
    """Valid SDP that the e2ae rewrite must refuse (SIP 488); ``stream`` is the m-line index."""

    def __init__(self, stream: int | None, reason: str) -> None:
        where = "SDP" if stream is None else f"stream {stream}"
        super().__init__(f"{where}: {reason}")
        self.stream = stream
        self.reason = reason


class PolicyRefusal(RemoteRewriteError):
    """A stream the operator's policy refuses (``non_e2ae_tls = "reject"``), though it is valid
    SDP; told apart from a malformed offer so that the call is refused, never bypassed."""


class LocalRewriteError(LocalPcscfError):
    """The rewrite was called with arguments it cannot use (wrong step, missing reservation)."""
