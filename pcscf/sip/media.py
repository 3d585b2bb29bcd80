"""The values the proxy gives to, and takes from, the media (SDP) handler.

The proxy core never looks into SDP. For every SDP body that is part of an offer/answer exchange
it asks the handler (see :mod:`pcscf.mediahook`) with a :class:`MediaContext`; the handler
answers with :class:`Forward` (the body to send on) or :class:`Reject` (status + Warning text).
"""

from __future__ import annotations

from typing import Literal

import attrs

from pcscf.rewrite import Step
from pcscf.sip.registrar import Flow

Side = Literal["gm", "core"]
Direction = Literal["orig", "term"]
Kind = Literal["offer", "answer"]


@attrs.frozen
class UeInfo:
    """The served UE of a call: its registration (if any) and the mechanisms it registered."""

    registered: bool
    aor: str = ""
    contact: str = ""
    flow: Flow | None = None
    mechanisms: frozenset[str] = frozenset()


@attrs.frozen
class DialogId:
    """A call as the proxy sees it: its Call-ID and our role in it (a spiral has both)."""

    call_id: str
    direction: Direction

    def __str__(self) -> str:
        return f"{self.call_id}/{self.direction}"


@attrs.frozen
class MediaContext:
    """Everything the handler needs to know about one SDP body."""

    dialog: DialogId
    #: ``offer`` or ``answer`` in the RFC 3264 sense.
    kind: Kind
    #: The method of the transaction: INVITE, UPDATE, PRACK or ACK.
    method: str
    #: Status of the response that carries the body, None for a request.
    status: int | None
    #: Part of the initial INVITE transaction (or its ACK), as opposed to a re-INVITE/UPDATE.
    initial: bool
    #: The body comes from the served UE (Gm side) rather than from the core.
    from_ue: bool
    ue: UeInfo
    cseq: int

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    @property
    def direction(self) -> Direction:
        return self.dialog.direction

    @property
    def step(self) -> Step:
        """The e2ae rewrite step (:mod:`pcscf.rewrite`) for this body, named by who offers:
        ``orig-*`` when the UE is the offerer, ``term-*`` when the core is (a late offer in a 2xx
        from the core of an originating call is a ``term-offer``)."""
        if self.kind == "offer":
            return "orig-offer" if self.from_ue else "term-offer"
        return "term-answer" if self.from_ue else "orig-answer"


@attrs.frozen
class Forward:
    """Send the message on with this body."""

    body: bytes


@attrs.frozen
class Reject:
    """Refuse: the proxy answers the request with ``status`` and a Warning carrying ``warning``
    (or, for an answer that arrives in a response, ends the call)."""

    status: int
    warning: str

    def __attrs_post_init__(self) -> None:
        if not 400 <= self.status <= 699:
            raise ValueError(f"a rejection needs a 4xx-6xx status, not {self.status}")


MediaResult = Forward | Reject
