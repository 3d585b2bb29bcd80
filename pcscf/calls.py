"""The e2ae state of calls in the P-CSCF (IMS-ALG): pure, sans-I/O.

Per call (:class:`CallSession`): the AGW chosen for it, its Iq context, the streams it protects
(:class:`StreamSession`: m-line index, access and core terminations, the UE's pinned
fingerprints, whether a verified TLS session exists, the TLS establishment deadline), the
:class:`~pcscf.rewrite.RewriteState` between an offer and its answer, and the last SDP sent to
each side (to build a re-offer that removes a stream).

:class:`CallTable` is driven by the Twisted edge (:mod:`pcscf.e2ae`) and answers with values the
edge carries out; it never reads a clock (``now`` is a parameter) and never does I/O:

- :meth:`CallTable.offer` -> a :class:`MediaDone` (forward/reject now) or an
  :class:`OfferWork` (Iq requests to make first); then :meth:`CallTable.offer_reserved` with
  the Reserve reply (or ``None``) or :meth:`CallTable.offer_failed` with the reason.
- :meth:`CallTable.answer` -> :class:`MediaDone` or :class:`AnswerWork` (Configure requests;
  the edge forwards the rewritten answer at once and configures beside it); then
  :meth:`CallTable.answer_configured` (starts the TLS establishment timers) or
  :meth:`CallTable.answer_failed` (ends the call).
- :meth:`CallTable.ended` (dialog over), :meth:`CallTable.notification` (AGW events),
  :meth:`CallTable.tick` (TLS establishment timers; :meth:`CallTable.next_deadline`),
  :meth:`CallTable.pick_gateway` (round robin among the AGWs in service).

Actions: :class:`IqReserve`, :class:`IqConfigure`, :class:`IqRelease` (fire and forget),
:class:`EndCall` (BYE/CANCEL both ways with a Reason), :class:`Reoffer` (a re-INVITE with a
stream set to port 0), :class:`Note` (a log event with named fields).

Failure statuses: an AGW problem (none in service, Iq timeout, link lost, an Iq error reply) is
503; SDP the rewrite refuses (malformed, an e2ae request without a usable fingerprint, an
answer that does not fit) is 488; anything else is 500. With ``on_agw_failure = "bypass"`` all
of these but a policy refusal (``non_e2ae_tls = "reject"``) forward the SDP untouched instead.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

import attrs

from certs.fingerprint import Fingerprint
from e2ae.tcpmedia import Setup, mirror
from iq import profile
from pcscf.errors import (
    LocalPcscfError,
    PcscfError,
    PolicyRefusal,
    RemotePcscfError,
    SdpError,
)
from pcscf.policy import Policy
from pcscf.rewrite import (
    AgwAddresses,
    AgwUpdate,
    OfferPlan,
    RewriteState,
    Step,
    StreamPlan,
    plan_offer,
    rewrite_answer,
    rewrite_offer,
)
from pcscf.sdp import SessionDescription
from pcscf.sip.media import DialogId, Forward, MediaContext, MediaResult, Reject, Side

FailureKind = Literal["agw", "sdp", "policy", "internal"]

#: SIP status of a rejection per kind of failure.
STATUS: dict[FailureKind, int] = {"agw": 503, "sdp": 488, "policy": 488, "internal": 500}
#: ``Reason`` cause used when a stream's TLS fails for good (the call or stream is ended).
TLS_FAILURE_CAUSE = 488


# --------------------------------------------------------------------------- actions


@attrs.frozen
class IqReserve:
    dialog: DialogId
    gateway: str
    request: profile.ReserveRequest


@attrs.frozen
class IqConfigure:
    dialog: DialogId
    gateway: str
    request: profile.ConfigureRequest


@attrs.frozen
class IqRelease:
    dialog: DialogId
    gateway: str
    request: profile.ReleaseRequest


@attrs.frozen
class EndCall:
    dialog: DialogId
    cause: int
    text: str


@attrs.frozen
class Reoffer:
    dialog: DialogId
    side: Side
    body: bytes


NoteLevel = Literal["debug", "info", "warn", "error"]


@attrs.frozen
class Note:
    """A log event: ``format`` references the keys of ``fields`` (call_id, stream, ...)."""

    level: NoteLevel
    format: str
    fields: tuple[tuple[str, object], ...]


CallAction = IqReserve | IqConfigure | IqRelease | EndCall | Reoffer | Note


@attrs.frozen
class MediaDone:
    """The SDP body's fate is decided: ``result`` goes to the proxy, ``actions`` to the edge."""

    result: MediaResult
    actions: tuple[CallAction, ...] = ()


@attrs.frozen
class OfferWork:
    """An offer that needs the AGW first: make ``reserve`` (if any) and ``configures`` and
    wait for them; ``releases`` are fire and forget."""

    dialog: DialogId
    step: Step
    from_ue: bool
    sdp: SessionDescription
    streams: tuple[StreamPlan, ...]
    gateway: str
    reserve: IqReserve | None
    configures: tuple[IqConfigure, ...]
    releases: tuple[IqRelease, ...]
    original: bytes


@attrs.frozen
class _StreamChanges:
    """What an offer changes in a call's e2ae streams."""

    new: tuple[StreamPlan, ...]
    rekeyed: tuple[profile.StreamConfiguration, ...]
    releases: tuple[IqRelease, ...]


@attrs.frozen
class AnswerWork:
    """An answer whose rewrite is ready: tell the AGW (``configures``, wait for them), then
    forward ``body``; ``releases`` are fire and forget."""

    dialog: DialogId
    from_ue: bool
    body: bytes
    configures: tuple[IqConfigure, ...]
    releases: tuple[IqRelease, ...]
    started: tuple[int, ...]


# --------------------------------------------------------------------------- state


@attrs.define
class StreamSession:
    """One protected stream (m-line ``index``; Iq stream number ``index + 1``)."""

    index: int
    media: profile.MediaType
    access_termination: str
    core_termination: str
    reservation: AgwAddresses
    fingerprints: tuple[Fingerprint, ...] = ()
    verified: bool = False
    deadline: float | None = None
    failed_attempts: int = 0
    #: The AGW's own a=setup roles as reserved (a Configure only sends a role that changes).
    access_setup: Setup | None = None
    core_setup: Setup | None = None

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def terminations(self) -> tuple[str, str]:
        return (self.access_termination, self.core_termination)


@attrs.define
class CallSession:
    dialog: DialogId
    gateway: str | None = None
    context: int | None = None
    streams: dict[int, StreamSession] = attrs.field(factory=dict)
    pending: RewriteState | None = None
    answered: dict[bytes, bytes] = attrs.field(factory=dict)
    sent: dict[str, SessionDescription] = attrs.field(factory=dict)
    ended: bool = False
    failed_attempts: int = 0


def _other(side: Side) -> Side:
    return "core" if side == "gm" else "gm"


def _sender(from_ue: bool) -> Side:
    return "gm" if from_ue else "core"


def _media_type(media: str) -> profile.MediaType:
    return "message" if media == "message" else "application"


def _endpoint(host: str | None, port: int | None) -> profile.Endpoint | None:
    if host is None or port is None:
        return None
    try:
        return profile.Endpoint(host, port)
    except ValueError:
        return None


def _keep_every_note(level: NoteLevel) -> bool:
    return True


def _note(level: NoteLevel, fmt: str, **fields: object) -> Note:
    return Note(level, fmt, tuple(fields.items()))


def _bump_origin(sdp: SessionDescription) -> None:
    """Increment the session version of ``o=`` (RFC 3264 section 8)."""
    lines = sdp.session.lines
    for i, line in enumerate(lines):
        if line.startswith("o="):
            parts = line.split(" ")
            if len(parts) >= 3 and parts[2].isdigit():
                parts[2] = str(int(parts[2]) + 1)
                lines[i] = " ".join(parts)
                sdp.session.lines_changed()
            return


class CallTable:
    """The e2ae calls of one P-CSCF. See the module docstring for the protocol."""

    def __init__(
        self, policy: Policy, *, keep_note: Callable[[NoteLevel], bool] | None = None
    ) -> None:
        self.policy = policy
        #: Whether a :class:`Note` of a level would be kept (logged) by the edge: the info
        #: Notes of every call (reserved, releasing) are only built when it says so. By
        #: default every Note is built.
        self.keep_note: Callable[[NoteLevel], bool] = keep_note or _keep_every_note
        self.calls: dict[DialogId, CallSession] = {}
        self._contexts: dict[tuple[str, int], DialogId] = {}
        #: Contexts released lately, for the Notifies that cross their release on Iq.
        self._released: OrderedDict[tuple[str, int], DialogId] = OrderedDict()
        self._next_gateway = 0
        #: Refused TLS attempts (strangers), over all calls.
        self.stranger_failures = 0
        self._timers: list[tuple[float, int, DialogId, int]] = []
        self._seq = itertools.count()

    # ------------------------------------------------------------------ gateways

    def pick_gateway(self, in_service: Sequence[str]) -> str | None:
        """Round robin over the AGWs in service (in their registration order)."""
        if not in_service:
            return None
        choice = in_service[self._next_gateway % len(in_service)]
        self._next_gateway += 1
        return choice

    def held(self) -> dict[DialogId, list[str]]:
        """The terminations each call holds (for tests and the operator)."""
        return {
            d: [t for s in c.streams.values() for t in s.terminations]
            for d, c in self.calls.items()
            if c.streams
        }

    # ------------------------------------------------------------------ offers

    def offer(
        self, ctx: MediaContext, body: bytes, in_service: Sequence[str], now: float
    ) -> MediaDone | OfferWork:
        """An offer from ``ctx.from_ue`` (UE: ``orig-offer``; core: ``term-offer``).

        Steps: plan the offer; sort its streams against the call's (new, re-keyed, removed);
        with nothing for the AGW, rewrite at once; else pick the AGW and ask it.
        """
        call = self._call_for(ctx.dialog)
        if call.ended:
            return MediaDone(Reject(500, "e2ae: the call has ended"))
        step: Step = "orig-offer" if ctx.from_ue else "term-offer"
        try:
            sdp = SessionDescription.parse(body)
            plan = plan_offer(step, sdp, ctx.ue.mechanisms, self.policy)
        except PcscfError as exc:
            return self._offer_error(call, ctx.from_ue, body, exc)
        call.pending = None
        call.answered.clear()
        changes = self._stream_changes(call, plan.streams, step)
        if not changes.new and not changes.rekeyed:
            done = self._finish_offer_rewrite(call, ctx.from_ue, body, sdp, plan.streams, step)
            self._forget_if_empty(call)
            return MediaDone(done.result, (*changes.releases, *done.actions))
        gateway = call.gateway if call.streams else self.pick_gateway(in_service)
        if gateway is None:
            return self._offer_error(
                call, ctx.from_ue, body, _AgwError("no AGW in service"), list(changes.releases)
            )
        return OfferWork(
            ctx.dialog,
            step,
            ctx.from_ue,
            sdp,
            plan.streams,
            gateway,
            self._reserve_new(call, gateway, changes.new),
            self._configure_rekeyed(call, changes.rekeyed),
            changes.releases,
            body,
        )

    def _call_for(self, dialog: DialogId) -> CallSession:
        call = self.calls.get(dialog)
        if call is None:
            call = self.calls[dialog] = CallSession(dialog)
        return call

    def _stream_changes(
        self, call: CallSession, streams: Sequence[StreamPlan], step: Step
    ) -> _StreamChanges:
        """The offer's e2ae streams against the call's: new ones, ones the UE re-keyed (a new
        fingerprint, originating only), and released ones (no longer e2ae in this offer)."""
        new: list[StreamPlan] = []
        rekeyed: list[profile.StreamConfiguration] = []
        releases: list[IqRelease] = []
        for stream in streams:
            existing = call.streams.get(stream.index)
            if stream.treatment != "e2ae":
                if existing is not None:
                    releases.append(self._release_stream(call, existing, "removed by re-offer"))
            elif existing is None:
                new.append(stream)
            elif (
                step == "orig-offer"
                and stream.fingerprints
                and set(stream.fingerprints) != set(existing.fingerprints)
            ):
                existing.fingerprints = stream.fingerprints
                existing.verified = False
                rekeyed.append(
                    profile.StreamConfiguration(
                        existing.number,
                        existing.media,
                        existing.access_termination,
                        "",
                        ue_fingerprints=stream.fingerprints,
                    )
                )
        return _StreamChanges(tuple(new), tuple(rekeyed), tuple(releases))

    def _reserve_new(
        self, call: CallSession, gateway: str, new: Sequence[StreamPlan]
    ) -> IqReserve | None:
        """The Reserve for the new streams (in the call's context, once it has one)."""
        if not new:
            return None
        return IqReserve(
            call.dialog,
            gateway,
            profile.ReserveRequest(
                call.dialog.call_id,
                tuple(self._reservation(s) for s in new),
                context=call.context,
                agw_fingerprint_hash=self.policy.agw_fingerprint_hash,
            ),
        )

    @staticmethod
    def _configure_rekeyed(
        call: CallSession, rekeyed: Sequence[profile.StreamConfiguration]
    ) -> tuple[IqConfigure, ...]:
        """The Configure carrying the re-keyed streams' new fingerprints to their AGW."""
        if not rekeyed or call.context is None or call.gateway is None:
            return ()
        return (
            IqConfigure(
                call.dialog, call.gateway, profile.ConfigureRequest(call.context, tuple(rekeyed))
            ),
        )

    def _reservation(self, s: StreamPlan) -> profile.StreamReservation:
        assert s.access_setup is not None and s.offer_setup is not None
        # Terminating, the core's role is only decided by the UE's answer; an AGW keeps the
        # role it was reserved with, so for a core offering actpass we reserve the role that
        # carries the usual UE answer (active, RFC 6135) through to the core.
        core_setup = s.core_setup or (
            "active" if s.offer_setup == "actpass" else mirror(s.offer_setup)
        )
        remote = _endpoint(s.remote_address, s.remote_port)
        orig = s.ue_setup is not None
        return profile.StreamReservation(
            s.index + 1,
            _media_type(s.media),
            s.access_setup,
            core_setup,
            ue_fingerprints=s.fingerprints,
            ue_address=remote if orig else None,
            ue_setup=s.ue_setup,
            core_address=None if orig else remote,
            core_remote_setup=None if orig else s.offer_setup,
        )

    def offer_reserved(
        self, work: OfferWork, reply: profile.ReserveReply | None, now: float
    ) -> MediaDone:
        """The Iq requests of ``work`` succeeded (``reply``: the Reserve reply, if any)."""
        call = self.calls.get(work.dialog)
        if call is None or call.ended:
            actions: list[CallAction] = []
            if reply is not None:
                actions.append(
                    IqRelease(work.dialog, work.gateway, profile.ReleaseRequest(reply.context))
                )
                actions.append(
                    _note(
                        "info",
                        "e2ae call {call_id} ended during reservation: releasing context"
                        " {iq_context}",
                        call_id=work.dialog.call_id,
                        iq_context=reply.context,
                    )
                )
            return MediaDone(Reject(500, "e2ae: the call has ended"), tuple(actions))
        notes: list[CallAction] = []
        if reply is not None:
            call.gateway = work.gateway
            call.context = reply.context
            self._contexts[(work.gateway, reply.context)] = work.dialog
            by_number = {s.stream: s for s in reply.streams}
            for plan in work.streams:
                if plan.treatment != "e2ae" or plan.index in call.streams:
                    continue
                r = by_number.get(plan.index + 1)
                if r is None:
                    return self.offer_failed(
                        work, _AgwError(f"AGW reply has no stream {plan.index + 1}"), now
                    )
                call.streams[plan.index] = StreamSession(
                    plan.index,
                    _media_type(plan.media),
                    r.access_termination,
                    r.core_termination,
                    AgwAddresses(
                        r.access.host, r.access.port, r.core.host, r.core.port, r.agw_fingerprint
                    ),
                    fingerprints=plan.fingerprints,
                    access_setup=r.access_setup,
                    core_setup=r.core_setup,
                )
                if self.keep_note("info"):  # (a Note no observer keeps is not built)
                    notes.append(
                        _note(
                            "info",
                            "e2ae call {call_id} stream {stream}: AGW {gateway} context"
                            " {iq_context} terminations {termination} / {core_termination}",
                            call_id=work.dialog.call_id,
                            stream=plan.index,
                            gateway=work.gateway,
                            iq_context=reply.context,
                            termination=r.access_termination,
                            core_termination=r.core_termination,
                        )
                    )
        done = self._finish_offer_rewrite(
            call, work.from_ue, work.original, work.sdp, work.streams, work.step
        )
        return MediaDone(done.result, (*notes, *done.actions))

    def _finish_offer_rewrite(
        self,
        call: CallSession,
        from_ue: bool,
        body: bytes,
        sdp: SessionDescription,
        streams: tuple[StreamPlan, ...],
        step: Step,
    ) -> MediaDone:
        plan = OfferPlan(step, streams, self.policy.accepted_hash_funcs)
        reservations = {i: s.reservation for i, s in call.streams.items()}
        try:
            result = rewrite_offer(sdp, plan, reservations)
        except PcscfError as exc:
            return self._offer_error(call, from_ue, body, exc, release_all=True)
        call.pending = result.state if plan.e2ae_streams else None
        call.sent[_other(_sender(from_ue))] = result.sdp
        if not plan.e2ae_streams:
            return MediaDone(Forward(body))
        return MediaDone(Forward(result.sdp.serialise()))

    def offer_failed(
        self,
        work: OfferWork,
        error: BaseException,
        now: float,
        reply: profile.ReserveReply | None = None,
    ) -> MediaDone:
        """The Iq requests of ``work`` failed (``error`` says how). ``reply``: a Reserve that
        succeeded before a later request failed; what it reserved is released. A failed initial
        offer releases the whole call; a failed re-offer keeps the streams of the session."""
        actions: list[CallAction] = []
        call = self.calls.get(work.dialog)
        if reply is not None:
            fresh = call is None or call.context != reply.context
            terms = (
                ()
                if fresh
                else tuple(
                    t for s in reply.streams for t in (s.access_termination, s.core_termination)
                )
            )
            actions.append(
                IqRelease(work.dialog, work.gateway, profile.ReleaseRequest(reply.context, terms))
            )
        if call is None or call.ended:
            return MediaDone(Reject(500, "e2ae: the call has ended"), tuple(actions))
        kind: BaseException = error if isinstance(error, PcscfError) else _AgwError(str(error))
        done = self._offer_error(
            call, work.from_ue, work.original, kind, actions, release_all=not call.streams
        )
        return done

    def _offer_error(
        self,
        call: CallSession,
        from_ue: bool,
        body: bytes,
        exc: BaseException,
        releases: Sequence[CallAction] = (),
        *,
        release_all: bool = False,
    ) -> MediaDone:
        kind, text = classify(exc)
        actions: list[CallAction] = list(releases)
        if release_all:
            actions.extend(self._release_all(call, "offer failed"))
        actions.append(
            _note(
                "warn",
                "e2ae call {call_id}: offer not protected ({cause}: {reason})",
                call_id=call.dialog.call_id,
                cause=kind,
                reason=text,
            )
        )
        if self.policy.on_agw_failure == "bypass" and kind != "policy":
            call.pending = None
            actions.append(
                _note(
                    "warn",
                    "e2ae call {call_id}: forwarding without e2ae (on_agw_failure = bypass)",
                    call_id=call.dialog.call_id,
                )
            )
            self._forget_if_empty(call)
            return MediaDone(Forward(body), tuple(actions))
        self._forget_if_empty(call)
        return MediaDone(Reject(STATUS[kind], f"e2ae: {text}"), tuple(actions))

    # ------------------------------------------------------------------ answers

    def answer(self, ctx: MediaContext, body: bytes, now: float) -> MediaDone | AnswerWork:
        """An answer to the call's pending offer."""
        call = self.calls.get(ctx.dialog)
        if call is None or call.pending is None:
            return MediaDone(Forward(body))
        if call.ended:
            return MediaDone(Reject(500, "e2ae: the call has ended"))
        cached = call.answered.get(body)
        if cached is not None:  # the same answer again (18x then 2xx, retransmission)
            return MediaDone(Forward(cached))
        state = call.pending
        step: Step = "orig-answer" if state.step == "orig-offer" else "term-answer"
        try:
            sdp = SessionDescription.parse(body)
            result = rewrite_answer(step, sdp, state)
        except PcscfError as exc:
            kind, text = classify(exc)
            actions = [
                *self._release_all(call, "answer refused"),
                _note(
                    "warn",
                    "e2ae call {call_id}: answer refused ({reason})",
                    call_id=call.dialog.call_id,
                    reason=text,
                ),
            ]
            return MediaDone(Reject(STATUS[kind], f"e2ae: {text}"), tuple(actions))
        out = result.sdp.serialise()
        configures: list[profile.StreamConfiguration] = []
        releases: list[IqRelease] = []
        started: list[int] = []
        for update in result.agw_updates:
            stream = call.streams.get(update.index)
            if stream is None:
                continue
            if update.release:
                releases.append(self._release_stream(call, stream, "rejected in the answer"))
                continue
            configures.append(self._configuration(stream, update))
            if update.fingerprints:
                stream.fingerprints = update.fingerprints
            if not stream.verified:
                started.append(stream.index)
        call.answered[body] = out
        call.sent[_other(_sender(ctx.from_ue))] = result.sdp
        self._forget_if_empty(call)
        if not configures:
            return MediaDone(Forward(out), tuple(releases))
        assert call.gateway is not None and call.context is not None
        request = profile.ConfigureRequest(call.context, tuple(configures))
        return AnswerWork(
            ctx.dialog,
            ctx.from_ue,
            out,
            (IqConfigure(ctx.dialog, call.gateway, request),),
            tuple(releases),
            tuple(started),
        )

    def _configuration(
        self, stream: StreamSession, update: AgwUpdate
    ) -> profile.StreamConfiguration:
        establish = update.access_role == "client"
        remote = _endpoint(update.remote_address, update.remote_port)
        core_setup = update.core_setup if update.core_setup != stream.core_setup else None
        if update.side == "core":
            assert update.core_setup is not None
            return profile.StreamConfiguration(
                stream.number,
                stream.media,
                stream.access_termination if establish else "",
                stream.core_termination,
                core_address=remote,
                core_remote_setup=mirror(update.core_setup),
                core_setup=core_setup,
                establish_tls=establish,
            )
        ue_setup: Setup | None = None
        access_setup: Setup | None = None
        if update.access_role is not None:
            access_setup = "active" if establish else "passive"
            ue_setup = mirror(access_setup)
            if access_setup == stream.access_setup:
                access_setup = None
        return profile.StreamConfiguration(
            stream.number,
            stream.media,
            stream.access_termination,
            stream.core_termination if core_setup else "",
            ue_address=remote,
            ue_setup=ue_setup,
            ue_fingerprints=update.fingerprints,
            access_setup=access_setup,
            core_setup=core_setup,
            establish_tls=establish,
        )

    def answer_configured(self, work: AnswerWork, now: float) -> MediaDone:
        """The AGW took the configuration: start the TLS establishment timers, forward."""
        call = self.calls.get(work.dialog)
        if call is None or call.ended:
            return MediaDone(Reject(500, "e2ae: the call has ended"))
        for index in work.started:
            stream = call.streams.get(index)
            if stream is not None and not stream.verified and stream.deadline is None:
                stream.deadline = now + self.policy.tls_establishment_timeout
                heapq.heappush(self._timers, (stream.deadline, next(self._seq), work.dialog, index))
        return MediaDone(Forward(work.body))

    def answer_failed(
        self, work: AnswerWork, error: BaseException, now: float, *, forwarded: bool = False
    ) -> MediaDone:
        """Configuring the AGW failed: the answer cannot be honoured; the call ends (with
        ``forwarded``, the answer already went on: an :class:`EndCall` ends the call)."""
        call = self.calls.get(work.dialog)
        _, text = classify(error if isinstance(error, PcscfError) else _AgwError(str(error)))
        actions: list[CallAction] = []
        if call is not None:
            if call.ended:
                return MediaDone(Reject(500, "e2ae: the call has ended"))
            actions.extend(self._release_all(call, "configuration failed"))
            if forwarded:
                call.ended = True
                actions.append(EndCall(work.dialog, 503, f"e2ae: {text}"))
        actions.append(
            _note(
                "warn",
                "e2ae call {call_id}: AGW configuration failed ({reason})",
                call_id=work.dialog.call_id,
                reason=text,
            )
        )
        return MediaDone(Reject(503, f"e2ae: {text}"), tuple(actions))

    # ------------------------------------------------------------------ lifecycle

    def ended(self, dialog: DialogId, reason: str) -> list[CallAction]:
        """The call is over: release everything it holds."""
        call = self.calls.get(dialog)
        if call is None:
            return []
        call.ended = True
        actions = self._release_all(call, reason)
        del self.calls[dialog]
        return actions

    def notification(self, gateway: str, event: profile.IqEvent, now: float) -> list[CallAction]:
        """An event the AGW reported with Notify."""
        dialog = self._contexts.get((gateway, event.context))
        call = self.calls.get(dialog) if dialog is not None else None
        stream = None
        if call is not None:
            stream = next(
                (s for s in call.streams.values() if event.termination in s.terminations), None
            )
        fields: dict[str, object] = dict(
            call_id=dialog.call_id if dialog else None,
            stream=stream.index if stream else None,
            iq_context=event.context,
            termination=event.termination,
            peer=event.peer,
            gateway=gateway,
        )
        if call is None or stream is None:
            gone = self._released.get((gateway, event.context))
            if gone is not None:
                # Sent by the AGW as the call's Release crossed it on Iq (closing legs report).
                fields["call_id"] = gone.call_id
                return [
                    _note(
                        "info",
                        "e2ae call {call_id}: {kind} on {termination} after the context was"
                        " released (nothing to do)",
                        kind=event.kind,
                        **fields,
                    )
                ]
            return [
                _note("info", "e2ae: {kind} on unknown {termination}", kind=event.kind, **fields)
            ]
        if event.kind == "tls-established":
            stream.verified = True
            stream.deadline = None
            return [_note("info", "e2ae call {call_id} stream {stream}: TLS verified", **fields)]
        if event.kind == "tls-failure":
            # A refused attempt (anyone can reach the AGW port, before or after the UE's
            # verified session): counted, never ends the stream by itself.
            stream.failed_attempts += 1
            call.failed_attempts += 1
            self.stranger_failures += 1
            return [
                _note(
                    "warn",
                    "e2ae call {call_id} stream {stream}: refused TLS attempt from {peer}"
                    " ({cause}); {attempts} so far, the stream stays open",
                    cause=event.cause,
                    attempts=stream.failed_attempts,
                    **fields,
                )
            ]
        if event.kind == "connection-closed":
            return [_note("info", "e2ae call {call_id} stream {stream}: closed", **fields)]
        if event.kind == "stream-failed":
            why = (
                f"no verified TLS session on stream {stream.index}"
                " (the AGW's establishment timer ran out)"
            )
        else:  # tcp-failure
            side = "core" if event.termination == stream.core_termination else "access"
            why = f"the {side} TCP connection of stream {stream.index} failed"
        return self._tls_failed(call, stream, why, fields)

    def _live_timer(self, entry: tuple[float, int, DialogId, int]) -> StreamSession | None:
        deadline, _, dialog, index = entry
        call = self.calls.get(dialog)
        stream = call.streams.get(index) if call is not None and not call.ended else None
        return stream if stream is not None and stream.deadline == deadline else None

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has work next (a heap of timers; stale entries are dropped)."""
        while self._timers and self._live_timer(self._timers[0]) is None:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def tick(self, now: float) -> list[CallAction]:
        """Run the TLS establishment timers that are due."""
        actions: list[CallAction] = []
        while self._timers and self._timers[0][0] <= now:
            entry = heapq.heappop(self._timers)
            stream = self._live_timer(entry)
            call = self.calls.get(entry[2])
            if stream is None or call is None:
                continue
            stream.deadline = None
            why = (
                f"no verified TLS session on stream {stream.index} within"
                f" {self.policy.tls_establishment_timeout:g} s"
            )
            if stream.failed_attempts:
                why += f" ({stream.failed_attempts} refused attempt(s))"
            fields: dict[str, object] = dict(
                call_id=call.dialog.call_id,
                stream=stream.index,
                iq_context=call.context,
                termination=stream.access_termination,
            )
            actions.extend(self._tls_failed(call, stream, why, fields))
        return actions

    def _tls_failed(
        self, call: CallSession, stream: StreamSession, why: str, fields: dict[str, object]
    ) -> list[CallAction]:
        note = _note("warn", "e2ae call {call_id} stream {stream}: {reason}", reason=why, **fields)
        if self._ends_call(call):
            return [note, *self._release_all(call, why), self._end(call, why)]
        release = self._release_stream(call, stream, why)
        return [note, release, *self._reoffers_without(call, [stream.index])]

    def gateway_status(
        self, gateway: str, in_service: bool, reason: str, now: float
    ) -> list[CallAction]:
        """An AGW came into service or left it (Iq ServiceChange, or its link was lost).

        ``forced`` (the AGW shut down, after releasing everything it held) and a cold
        ``register`` of an AGW that this table still has calls on (it restarted without its
        contexts) take away the media of every call on it: each such call loses its protected
        streams as if their TLS had failed (``on_tls_failure``), and nothing is released on
        Iq, the AGW holds nothing. A lost link or a warm ``restart`` does nothing: the AGW keeps
        its contexts and sessions and comes back."""
        if in_service and reason != "register":
            return []
        if not in_service and reason != "forced":
            return [
                _note(
                    "warn",
                    "e2ae: AGW {gateway} unreachable ({reason}); its calls keep their media"
                    " while it reconnects",
                    gateway=gateway,
                    reason=reason,
                )
            ]
        why = (
            "the AGW carrying the call went out of service"
            if not in_service
            else "the AGW carrying the call restarted and lost its terminations"
        )
        actions: list[CallAction] = []
        for call in list(self.calls.values()):
            if call.gateway != gateway or call.context is None or call.ended:
                continue
            note = _note(
                "warn",
                "e2ae call {call_id}: {reason} (context {iq_context} on {gateway})",
                call_id=call.dialog.call_id,
                iq_context=call.context,
                gateway=gateway,
                reason=why,
            )
            lost = sorted(call.streams)
            self._drop_context(gateway, call.context)
            call.streams.clear()
            call.context = None
            if self._ends_call(call):
                actions += [note, self._end(call, why)]
            else:
                actions += [note, *self._reoffers_without(call, lost)]
            self._forget_if_empty(call)
        return actions

    def _ends_call(self, call: CallSession) -> bool:
        """Does a failed protected stream end the whole call (policy, or nothing sent yet)?"""
        return self.policy.on_tls_failure == "bye" or not call.sent

    def _end(self, call: CallSession, why: str) -> EndCall:
        call.ended = True
        return EndCall(call.dialog, TLS_FAILURE_CAUSE, f"e2ae: {why}")

    def _reoffers_without(self, call: CallSession, indexes: Sequence[int]) -> list[CallAction]:
        """Re-offers to both parties of what each was last sent, with ``indexes`` at port 0."""
        actions: list[CallAction] = []
        for side, sdp in sorted(call.sent.items()):
            body = sdp.copy()
            dropped = [i for i in indexes if i < len(body.media)]
            if not dropped:
                continue
            for index in dropped:
                body.media[index].set_port(0)
            _bump_origin(body)
            call.sent[side] = body
            actions.append(Reoffer(call.dialog, "gm" if side == "gm" else "core", body.serialise()))
        return actions

    # ------------------------------------------------------------------ helpers

    def _release_stream(self, call: CallSession, stream: StreamSession, why: str) -> IqRelease:
        del call.streams[stream.index]
        assert call.gateway is not None and call.context is not None
        terms = stream.terminations
        if not call.streams:
            self._drop_context(call.gateway, call.context)
            request = profile.ReleaseRequest(call.context)
            call.context = None
        else:
            request = profile.ReleaseRequest(call.context, terms)
        return IqRelease(call.dialog, call.gateway, request)

    def _release_all(self, call: CallSession, why: str) -> list[CallAction]:
        if call.context is None or call.gateway is None:
            call.streams.clear()
            return []
        request = profile.ReleaseRequest(call.context)
        self._drop_context(call.gateway, call.context)
        call.streams.clear()
        call.context = None
        release = IqRelease(call.dialog, call.gateway, request)
        if not self.keep_note("info"):  # (a Note no observer keeps is not built)
            return [release]
        return [
            release,
            _note(
                "info",
                "e2ae call {call_id}: releasing context {iq_context} ({reason})",
                call_id=call.dialog.call_id,
                iq_context=request.context,
                reason=why,
            ),
        ]

    #: How many released contexts :attr:`_released` remembers.
    released_memory = 1024

    def _drop_context(self, gateway: str, context: int) -> None:
        dialog = self._contexts.pop((gateway, context), None)
        if dialog is not None:
            self._released[(gateway, context)] = dialog
            while len(self._released) > self.released_memory:
                self._released.popitem(last=False)

    def _forget_if_empty(self, call: CallSession) -> None:
        if not call.streams and call.pending is None and call.context is None:
            call.gateway = None


class _AgwError(Exception):
    """The AGW could not serve a request (shown as the cause of a 503)."""


def classify(exc: BaseException) -> tuple[FailureKind, str]:
    """The kind of a failure and a text for the Warning header."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, _AgwError):
        return "agw", text
    if isinstance(exc, RemotePcscfError):
        if isinstance(exc, PolicyRefusal):
            return "policy", text
        if isinstance(exc, SdpError):
            return "sdp", f"malformed SDP: {text}"
        return "sdp", text
    if isinstance(exc, LocalPcscfError):
        return "internal", text
    return "agw", text


def agw_error(text: str) -> Exception:
    """An AGW failure with ``text`` (for the edge: timeouts, link lost, not in service)."""
    return _AgwError(text)


__all__ = [
    "STATUS",
    "AnswerWork",
    "CallAction",
    "CallSession",
    "CallTable",
    "EndCall",
    "IqConfigure",
    "IqRelease",
    "IqReserve",
    "MediaDone",
    "Note",
    "OfferWork",
    "Reoffer",
    "StreamSession",
    "agw_error",
    "classify",
]
