"""The P-CSCF's e2ae media handler (Twisted edge): :class:`E2aeMediaHandler`.

Implements :class:`pcscf.mediahook.MediaHandler` on top of the pure call table
(:mod:`pcscf.calls`) and an :class:`iq.link.IqController`: every SDP body is classified and
rewritten by the call table; the Iq requests it asks for (Reserve, Configure) are made
asynchronously (the proxy keeps serving other calls), Releases are fire and forget; AGW
notifications and the TLS establishment timers end streams or calls through the proxy's
:class:`~pcscf.mediahook.CallControl`. AGWs are picked round robin among those in service.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from e2ae.logsetup import enabled
from iq import profile
from iq.config import IqTlsConfig
from iq.errors import IqError, IqTimeout, LinkLost, LocalIqError, NotInService, RemoteIqError
from iq.link import ControllerEvent, GatewayStatus, IqController, IqNotification
from pcscf.calls import (
    AnswerWork,
    CallAction,
    CallTable,
    EndCall,
    IqConfigure,
    IqRelease,
    IqReserve,
    MediaDone,
    Note,
    NoteLevel,
    OfferWork,
    Reoffer,
    agw_error,
)
from pcscf.config import PcscfConfig
from pcscf.errors import LocalPcscfError
from pcscf.mediahook import CallControl
from pcscf.policy import Policy
from pcscf.sip.media import DialogId, Forward, MediaContext, MediaResult

log = Logger(namespace="pcscf.e2ae")
_LEVELS = {name: LogLevel.levelWithName(name) for name in ("debug", "info", "warn", "error")}


def _note_enabled(level: NoteLevel) -> bool:
    """Would an event of a :class:`~pcscf.calls.Note`'s level be logged?"""
    return enabled(_LEVELS[level])


def iq_controller(config: PcscfConfig, reactor: Any = None) -> IqController:
    """The P-CSCF's end of Iq as configured: mutual TLS with the pinned AGW certificates, or
    plain TCP only with the explicit ``iq_insecure`` opt-in and its allow-list. Raises
    :class:`~iq.errors.LocalIqError` for a configuration that cannot be used."""
    tls = None
    if config.iq_tls is not None:
        cert, key = config.iq_tls
        tls = IqTlsConfig.from_files(cert, key, list(config.iq_peers), config.iq_keylog)
    iq_host, iq_port = config.iq
    return IqController(
        mid=f"[{iq_host}]:{iq_port}",
        tls=tls,
        insecure=config.iq_insecure,
        allow=config.iq_allow,
        limits=config.iq_limits,
        timeout=config.policy.iq_timeout,
        reactor=reactor,
    )


def _iq_reason(failure: Failure) -> str:
    exc = failure.value
    if isinstance(exc, IqTimeout):
        return f"no Iq reply from the AGW (timeout): {exc}"
    if isinstance(exc, NotInService):
        return f"AGW out of service: {exc}"
    if isinstance(exc, LinkLost):
        return f"Iq link to the AGW lost: {exc}"
    if isinstance(exc, RemoteIqError):
        return f"AGW refused: {exc}"
    if isinstance(exc, IqError):
        return f"Iq failure: {exc}"
    return f"Iq failure: {exc!r}"


class E2aeMediaHandler:
    """e2ae for MSRP and BFCP in calls (TS 33.328 sections 7.2.1, 7.3.1, Annex G.2)."""

    def __init__(self, controller: IqController, policy: Policy, *, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.controller = controller
        self.policy = policy
        self.table = CallTable(policy, keep_note=_note_enabled)
        self.control: CallControl | None = None
        self._timer: IDelayedCall | None = None
        self._timer_at: float | None = None
        self._unsubscribe = controller.subscribe(self._event)
        #: Iq requests in flight (tests wait on these to settle).
        self.in_flight: set[defer.Deferred[Any]] = set()

    # ------------------------------------------------------------------ MediaHandler

    def attach(self, control: CallControl) -> None:
        self.control = control

    def sdp(self, context: MediaContext, body: bytes) -> MediaResult | defer.Deferred[MediaResult]:
        now = self._now()
        if context.kind == "offer":
            step = self.table.offer(context, body, self.controller.gateways_in_service(), now)
            if isinstance(step, MediaDone):
                return self._done(step)
            return self._offer_work(step)
        answer = self.table.answer(context, body, now)
        if isinstance(answer, MediaDone):
            return self._done(answer)
        return self._answer_work(answer)

    def dialog_ended(self, dialog: DialogId, reason: str) -> None:
        self._run(self.table.ended(dialog, reason))

    def stop(self) -> None:
        self._unsubscribe()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    # ------------------------------------------------------------------ work

    def _iq_timeout(self) -> float:
        return self.policy.iq_timeout

    def _offer_work(self, work: OfferWork) -> defer.Deferred[MediaResult]:
        if work.releases:  # (an offer arms no timer: nothing to re-arm without actions)
            self._run(work.releases)
        reserved: list[profile.ReserveReply] = []
        d: defer.Deferred[Any] = defer.succeed(None)
        if work.reserve is not None:
            request = work.reserve.request
            if enabled(LogLevel.debug):
                log.debug(
                    "e2ae call {call_id}: reserving {count} stream(s) on {gateway}",
                    call_id=work.dialog.call_id,
                    count=len(request.streams),
                    gateway=work.gateway,
                )
            d = self._track(
                self.controller.reserve(work.gateway, request, timeout=self._iq_timeout())
            )
            d.addCallback(reserved.append)
        for conf in work.configures:
            d.addCallback(lambda _, conf=conf: self._configure(conf))

        def ok(_: object) -> MediaResult:
            reply = reserved[0] if reserved else None
            return self._done(self.table.offer_reserved(work, reply, self._now()))

        def failed(failure: Failure) -> MediaResult:
            error: Exception = agw_error(_iq_reason(failure))
            if failure.check(LocalIqError):
                # Not the AGW's fault: the request could not be built (500, with the reason).
                error = LocalPcscfError(f"Iq request cannot be encoded: {failure.value}")
            reply = reserved[0] if reserved else None
            return self._done(self.table.offer_failed(work, error, self._now(), reply))

        return d.addCallbacks(ok, failed)

    def _answer_work(self, work: AnswerWork) -> MediaResult:
        """Forward the rewritten answer now and configure the AGW beside it: the UE's TLS
        session is checked against the fingerprint the AGW already has (originating) or held
        by the AGW until the fingerprint arrives (terminating), and the core leg waits for the
        core address. Waiting for the reply before forwarding would add an Iq round trip to
        every answer (and provoke 2xx retransmissions on a slow link). A failed Configure ends
        the call."""
        if work.releases:  # (an answer arms no timer: nothing to re-arm without actions)
            self._run(work.releases)

        def ok(_: object) -> None:
            self._run(self.table.answer_configured(work, self._now()).actions)

        def failed(failure: Failure) -> None:
            inner = failure.value
            sub = inner.subFailure if isinstance(inner, defer.FirstError) else failure
            error = agw_error(_iq_reason(sub))
            self._run(self.table.answer_failed(work, error, self._now(), forwarded=True).actions)

        configures = work.configures
        if len(configures) == 1:
            # (the one Configure of an answer: its own Deferred, no gatherResults around it)
            self._configure(configures[0]).addCallbacks(ok, failed)
        else:
            defer.gatherResults(
                [self._configure(c) for c in configures], consumeErrors=True
            ).addCallbacks(ok, failed)
        return Forward(work.body)

    def _configure(self, conf: IqConfigure) -> defer.Deferred[Any]:
        return self._track(
            self.controller.configure(conf.gateway, conf.request, timeout=self._iq_timeout())
        )

    def _track(self, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
        self.in_flight.add(d)

        def done(result: object) -> object:
            self.in_flight.discard(d)
            return result

        return d.addBoth(done)

    def _done(self, done: MediaDone) -> MediaResult:
        self._run(done.actions)
        return done.result

    # ------------------------------------------------------------------ actions

    def _run(self, actions: Iterable[CallAction]) -> None:
        for action in actions:
            try:
                self._do(action)
            except Exception:
                log.failure("e2ae: failed to carry out {action!r}", action=action)
        self._rearm()

    def _do(self, action: CallAction) -> None:
        if isinstance(action, Note):
            level = _LEVELS[action.level]
            if enabled(level):
                log.emit(level, action.format, **dict(action.fields))
        elif isinstance(action, IqRelease):
            self._release(action)
        elif isinstance(action, EndCall):
            if self.control is not None:
                self.control.end_call(action.dialog, action.cause, action.text)
        elif isinstance(action, Reoffer):
            if self.control is not None:
                d = self.control.reoffer(action.dialog, action.side, action.body)
                d.addErrback(
                    lambda f: log.failure(
                        "e2ae call {call_id}: re-offer failed", f, call_id=action.dialog.call_id
                    )
                )
        elif isinstance(action, IqReserve | IqConfigure):  # pragma: no cover - via work objects
            raise AssertionError(f"unexpected {action!r}")

    #: A Release that got no reply (timeout) is sent again this many times, after a pause of
    #: ``iq_timeout``: a lost Release would leave the AGW holding the terminations.
    release_retries = 3

    def _release(self, action: IqRelease, attempt: int = 0) -> None:
        request = action.request
        d = self._track(
            self.controller.release(action.gateway, request, timeout=self._iq_timeout())
        )

        def released(reply: profile.ReleaseReply) -> None:
            if not enabled(LogLevel.info):
                return
            log.info(
                "e2ae call {call_id}: released context {iq_context} on {gateway}",
                call_id=action.dialog.call_id,
                iq_context=request.context,
                termination=",".join(request.terminations) or "*",
                gateway=action.gateway,
            )

        def failed(failure: Failure) -> None:
            again = failure.check(IqTimeout) is not None and attempt < self.release_retries
            log.warn(
                "e2ae call {call_id}: release of context {iq_context} on {gateway} failed:"
                " {reason}{retry}",
                call_id=action.dialog.call_id,
                iq_context=request.context,
                gateway=action.gateway,
                reason=_iq_reason(failure),
                retry="; trying again" if again else "",
            )
            if again:
                self.reactor.callLater(self._iq_timeout(), self._release, action, attempt + 1)

        d.addCallbacks(released, failed)

    # ------------------------------------------------------------------ events, timers

    def _event(self, event: ControllerEvent) -> None:
        if isinstance(event, IqNotification):
            self._run(self.table.notification(event.gateway, event.event, self._now()))
        elif isinstance(event, GatewayStatus):
            log.info(
                "e2ae: AGW {gateway} {state} ({reason})",
                gateway=event.gateway,
                state="in service" if event.in_service else "out of service",
                reason=event.reason,
            )
            self._run(
                self.table.gateway_status(
                    event.gateway, event.in_service, event.reason, self._now()
                )
            )

    def _now(self) -> float:
        return float(self.reactor.seconds())

    def _rearm(self) -> None:
        deadline = self.table.next_deadline()
        if self._timer is not None and self._timer.active():
            # A timer armed for an earlier deadline (a stream since verified or released)
            # fires and re-arms: no cancel and new reactor call on every call's end.
            if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
                return
            self._timer.cancel()
        self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.reactor.callLater(max(0.0, deadline - self._now()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._run(self.table.tick(self._now()))
