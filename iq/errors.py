"""Errors of the Iq link.

- :class:`RemoteIqError` carries an H.248 error code (H.248.1 section 14): either the peer sent
  something we cannot accept (a message that does not parse, a command outside the e2ae
  profile) and the code goes back to it as an ``Error`` descriptor, or the peer answered one of
  our requests with an ``Error`` descriptor (:class:`RequestFailed`).
- :class:`LocalIqError`: we were asked to encode something impossible, or the configuration is
  wrong. A bug or a bad config, never the peer's fault.
- :class:`IqUnavailable`: the request got no answer at all (timeout, link lost, the gateway is
  not in service).
"""

from __future__ import annotations

#: H.248.1 error codes used by this profile, with their standard texts.
ERROR_TEXTS: dict[int, str] = {
    400: "Syntax error in message",
    401: "Protocol Error",
    402: "Unauthorized",
    403: "Syntax error in transaction request",
    406: "Version Not Supported",
    410: "Incorrect identifier",
    411: "The transaction refers to an unknown ContextId",
    412: "No ContextIDs available",
    421: "Unknown action or illegal combination of actions",
    422: "Syntax Error in Action",
    430: "Unknown TerminationID",
    432: "Out of TerminationIDs or No TerminationID available",
    442: "Syntax Error in Command",
    444: "Unsupported or Unknown Package",
    445: "Missing Remote or Local Descriptor",
    446: "Unsupported or Unknown Event",
    447: "Unsupported or Unknown Signal",
    449: "Unsupported or Unknown Parameter or Property Value",
    450: "Descriptor not legal in this command",
    451: "Descriptor appears twice in a command",
    457: "Missing parameter in signal or event",
    500: "Internal software failure in the MG or MGC",
    501: "Not Implemented",
    502: "Not ready",
    505: "Transaction Request Received before a ServiceChange Reply has been received",
    510: "Insufficient resources",
}


class IqError(Exception):
    """Root of every error raised by :mod:`iq`."""


class RemoteIqError(IqError):
    """An error with an H.248 error code; travels on the wire as ``Error = code { "reason" }``.

    ``where`` says where the offending value was (a termination id, a descriptor, an offset)."""

    default_code = 500

    def __init__(self, reason: str, *, code: int | None = None, where: str = "") -> None:
        self.code = self.default_code if code is None else code
        self.reason = reason
        self.where = where
        at = f" at {where}" if where else ""
        super().__init__(f"H.248 {self.code} {reason}{at}")


class CodecError(RemoteIqError):
    """Text that is not H.248 we can decode (400 syntax, 406 version, ...).

    ``transaction_id`` is the id of the transaction being decoded when the error was found, if
    it was known by then, so that the error can be answered on that transaction."""

    default_code = 400

    def __init__(
        self,
        reason: str,
        *,
        code: int | None = None,
        where: str = "",
        transaction_id: int | None = None,
    ) -> None:
        super().__init__(reason, code=code, where=where)
        self.transaction_id = transaction_id


class ProfileError(RemoteIqError):
    """Valid H.248 that is not a request or reply of the e2ae Iq profile (421, 449, 445...)."""

    default_code = 421


class CommandError(RemoteIqError):
    """A gateway refuses a command; raised by a :class:`iq.link.GatewayHandler`."""


class UnknownTermination(CommandError):
    default_code = 430


class UnknownContext(CommandError):
    default_code = 411


class InsufficientResources(CommandError):
    default_code = 510


class UnsupportedValue(CommandError):
    default_code = 449


class RequestFailed(RemoteIqError):
    """The peer answered our request with an ``Error`` descriptor."""


class LocalIqError(IqError, ValueError):
    """A value that cannot be encoded, or a bad Iq configuration."""


class IqUnavailable(IqError):
    """A request got no answer."""


class IqTimeout(IqUnavailable):
    """No reply within the request's timeout."""


class LinkLost(IqUnavailable):
    """The Iq link went down with the request pending (or was down when it was made)."""


class NotInService(IqUnavailable):
    """The gateway named in a request is not registered (in service) with this controller."""


class Overloaded(IqUnavailable):
    """A request was not sent: the link already has as many requests pending as it may."""
