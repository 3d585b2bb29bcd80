"""The seam where the e2ae logic meets the SIP proxy.

The proxy calls a :class:`MediaHandler` for every SDP body of an offer/answer exchange
(INVITE, re-INVITE, UPDATE, PRACK, 18x, 2xx, ACK; late offer included) with a
:class:`~pcscf.sip.media.MediaContext`, and forwards what the handler returns:
:class:`~pcscf.sip.media.Forward` (new body) or :class:`~pcscf.sip.media.Reject` (status +
Warning). The handler may answer at once or with a Deferred; the proxy never waits on it: other
calls carry on, and later messages of the same call wait their turn.

Lifecycle: :meth:`MediaHandler.dialog_ended` once per call (BYE, CANCEL, error final response,
rejection, timeout), and :class:`CallControl` (given in :meth:`MediaHandler.attach`) lets the
handler end a call (BYE both ways with a Reason header) or send a re-offer to one side.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from pcscf.sip.media import DialogId, Forward, MediaContext, MediaResult, Side


class CallControl(Protocol):
    """What the proxy lets a media handler do to a call."""

    def end_call(self, dialog: DialogId, cause: int, text: str) -> None:
        """End the call towards both sides with ``Reason: SIP;cause=..;text=".."``: BYE if it
        was answered, else CANCEL towards the callee and an error final response to the caller."""

    def reoffer(self, dialog: DialogId, side: Side, body: bytes) -> Deferred[tuple[int, bytes]]:
        """Send a re-INVITE with ``body`` to the party on ``side`` (``gm`` or ``core``); fires
        with (final status, answer body). The proxy ACKs a 2xx itself."""


class MediaHandler(Protocol):
    """The e2ae logic (or anything else that owns SDP) as the proxy sees it."""

    def attach(self, control: CallControl) -> None:
        """Called once when the proxy starts."""

    def sdp(self, context: MediaContext, body: bytes) -> MediaResult | Deferred[MediaResult]:
        """Decide what to do with one SDP body. Raising or failing the Deferred counts as
        ``Reject(500, ...)``."""

    def dialog_ended(self, dialog: DialogId, reason: str) -> None:
        """The call is over (release what it holds). May arrive while an ``sdp`` call of the same
        call is still pending; the proxy then ignores that result."""


class PassThrough:
    """The default handler: every body goes on untouched."""

    control: CallControl | None = None

    def attach(self, control: CallControl) -> None:
        self.control = control

    def sdp(self, context: MediaContext, body: bytes) -> MediaResult:
        return Forward(body)

    def dialog_ended(self, dialog: DialogId, reason: str) -> None:
        pass
