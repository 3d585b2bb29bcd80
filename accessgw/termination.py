"""The termination / stream state machine of the Access Gateway (pure: no sockets, no clock).

One :class:`Termination` is one media stream of a call as the AGW sees it: an access side (TLS
towards the UE, with the UE's certificate pinned by fingerprint) and a core side (plain TCP). The
Twisted edge (:mod:`accessgw.gateway`) feeds it what happened and acts on the events it returns;
time is always the parameter ``now`` (seconds, any monotonic origin).

States::

    reserved --(server role: listen)--> listening --+
        \\--(client role: establish TLS)--> connecting --+--> verified --> relaying --> closed
                                  (establishment timer runs out) --> failed

Connection *attempts* on the access side live beside the state. Anyone can reach an AGW port, so
a failed attempt (wrong or missing certificate, bad version, timeout) is refused, reported and
counted, but does not consume the termination: the legitimate UE can still connect until the TLS
establishment timer runs out. A termination accepts one verified session.

A handshake that completes before the ALG has given the UE's fingerprint (the terminating race)
is held for up to ``hold_timeout`` seconds (policy ``hold``) or refused at once (``reject``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

from certs.fingerprint import HASH_FUNCS, Fingerprint, matching_fingerprint, normalise_hash_func
from e2ae.tcpmedia import TlsRole
from iq.profile import TlsFailureCause

CoreRole = Literal["listen", "connect"]
"""The AGW's TCP role on the core side (``a=setup:passive`` towards the core is ``listen``)."""
EarlyHandshakePolicy = Literal["hold", "reject"]
Side = Literal["access", "core"]

FailureCause = TlsFailureCause
"""Why a TLS attempt was refused: exactly the causes the Iq profile carries in a Notify
(:data:`iq.profile.TlsFailureCause`). The first four are the ones TS 23.334 names;
``handshake-failure`` covers every other handshake error (no shared cipher, a bad record),
``fingerprint-unknown`` a handshake refused (policy ``reject``, or ``hold`` ran out) because the
ALG had not given the fingerprint, ``connection-failed`` a TCP connect to the UE that failed
(AGW as TLS client)."""


class State(enum.Enum):
    RESERVED = "reserved"
    LISTENING = "listening"
    CONNECTING = "connecting"
    VERIFIED = "verified"
    RELAYING = "relaying"
    CLOSED = "closed"
    FAILED = "failed"


class AttemptState(enum.Enum):
    HANDSHAKING = "handshaking"
    HELD = "held"
    VERIFIED = "verified"
    REFUSED = "refused"


# --- the fingerprint decision ---------------------------------------------------------------


@attrs.frozen
class Verdict:
    """The outcome of checking a presented certificate against the pinned fingerprints."""

    accepted: bool
    cause: FailureCause | None = None
    fingerprint: Fingerprint | None = None


def check_certificate(
    der: bytes | None,
    fingerprints: Iterable[Fingerprint],
    *,
    accepted_hashes: Iterable[str] = HASH_FUNCS,
) -> Verdict:
    """Does the presented certificate (DER, ``None`` if none) match a pinned fingerprint?

    Constant-time over every candidate of an accepted hash (:func:`certs.matching_fingerprint`).
    """
    if der is None:
        return Verdict(False, "no-certificate")
    found = matching_fingerprint(der, fingerprints, accepted=accepted_hashes)
    if found is None:
        return Verdict(False, "fingerprint-mismatch")
    return Verdict(True, None, found)


_VERSION_MARKERS = (
    "unsupported protocol",
    "wrong version number",
    "wrong ssl version",
    "tlsv1 alert protocol version",
    "unknown protocol",
    "version too low",
    "no protocols available",
)
_NO_CERT_MARKERS = (
    "peer did not return a certificate",
    "certificate required",
    "no certificate returned",
)
_MISMATCH_MARKERS = ("certificate verify failed",)


def classify_handshake_error(reasons: Sequence[str]) -> FailureCause:
    """Map OpenSSL error reason strings of a failed handshake to a failure cause."""
    text = " ".join(reasons).lower()
    if any(marker in text for marker in _VERSION_MARKERS):
        return "protocol-version"
    if any(marker in text for marker in _NO_CERT_MARKERS):
        return "no-certificate"
    if any(marker in text for marker in _MISMATCH_MARKERS):
        return "fingerprint-mismatch"
    return "handshake-failure"


# --- events the edge acts on and reports ----------------------------------------------------


@attrs.frozen
class TerminationStats:
    """What a termination carried and how its TLS went; returned on release (H.248 Statistics)."""

    termination: str
    stream: str
    bytes_to_core: int
    bytes_to_ue: int
    packets_to_core: int
    packets_to_ue: int
    tls_result: str
    """``verified``, ``pending`` (nothing decided yet) or the cause of the last refusal."""
    fingerprint: str | None
    """The pinned fingerprint the UE's certificate matched (``sha-256 AB:...``)."""
    failed_attempts: int
    failures: tuple[tuple[str, int], ...]
    """Refused attempts counted per cause."""
    state: str
    close_reason: str | None

    def as_dict(self) -> dict[str, object]:
        # Every field is a scalar but ``failures``: a plain copy (attrs.asdict's generic
        # recursion costs ten times more, on every closed session's log line).
        data: dict[str, object] = {name: getattr(self, name) for name in _STATS_FIELDS}
        data["failures"] = dict(self.failures)
        return data


_STATS_FIELDS = tuple(field.name for field in attrs.fields(TerminationStats))


@attrs.frozen
class TlsEstablished:
    termination: str
    attempt: int
    fingerprint: Fingerprint
    peer: str


@attrs.frozen
class TlsFailure:
    """An attempt was refused (Notify: TLS session establishment failure, with the cause)."""

    termination: str
    attempt: int
    cause: FailureCause
    peer: str
    detail: str = ""


@attrs.frozen
class HoldAttempt:
    """A handshake finished before the fingerprint was known: keep it paused until ``until``."""

    termination: str
    attempt: int
    until: float


@attrs.frozen
class ConnectCore:
    """The access side is verified and the AGW is TCP client towards the core: connect now."""

    termination: str


@attrs.frozen
class StartRelay:
    """Both legs are up: start moving bytes (held bytes first)."""

    termination: str


@attrs.frozen
class TcpFailure:
    """A leg failed (connect refused, reset); Notify: TCP connection establishment failure."""

    termination: str
    side: Side
    reason: str


@attrs.frozen
class StreamFailed:
    """The TLS establishment timer ran out without a verified session."""

    termination: str
    cause: FailureCause


@attrs.frozen
class Closed:
    """The relay is over (a leg closed or was reset, idle timeout, release)."""

    termination: str
    reason: str
    clean: bool
    stats: TerminationStats


Event = (
    TlsEstablished
    | TlsFailure
    | HoldAttempt
    | ConnectCore
    | StartRelay
    | TcpFailure
    | StreamFailed
    | Closed
)


# --- the state machine ----------------------------------------------------------------------


@attrs.define
class Attempt:
    id: int
    peer: str
    started: float
    state: AttemptState = AttemptState.HANDSHAKING
    der: bytes | None = None
    hold_until: float | None = None
    refused_cause: FailureCause | None = None


@attrs.frozen
class Timers:
    """Per-termination timers, in seconds. ``idle`` ``None`` disables the idle timeout."""

    establishment: float = 30.0
    handshake: float = 10.0
    hold: float = 5.0
    idle: float | None = None

    def __attrs_post_init__(self) -> None:
        for name in ("establishment", "handshake", "hold"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"timer {name} must be a positive number of seconds, not {value}")
        if self.idle is not None and not self.idle > 0:
            raise ValueError(f"idle timeout must be positive or unset, not {self.idle}")


def _hashes(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(normalise_hash_func(v) for v in value)


# Converters run at creation only: a hook on every assignment would give the class its own
# __setattr__, and every byte counter update of the relay would pay for it (about 2 us a read).
@attrs.define(on_setattr=attrs.setters.NO_OP)
class Termination:
    """State of one AGW stream: access TLS attempts, pinning, relay, timers, statistics."""

    id: str
    stream: str
    tls_role: TlsRole
    core_role: CoreRole
    timers: Timers = attrs.field(factory=Timers)
    early_policy: EarlyHandshakePolicy = "hold"
    accepted_hashes: tuple[str, ...] = attrs.field(default=HASH_FUNCS, converter=_hashes)
    fingerprints: tuple[Fingerprint, ...] = ()
    state: State = State.RESERVED
    establishment_deadline: float | None = None
    attempts: dict[int, Attempt] = attrs.field(factory=dict)
    verified_attempt: int | None = None
    verified_fingerprint: Fingerprint | None = None
    core_up: bool = False
    last_activity: float = 0.0
    bytes_to_core: int = 0
    bytes_to_ue: int = 0
    packets_to_core: int = 0
    packets_to_ue: int = 0
    failures: dict[str, int] = attrs.field(factory=dict)
    last_failure: FailureCause | None = None
    close_reason: str | None = None
    _next_attempt: int = 1

    # -- arming and configuration (from the ALG) --

    def listen(self) -> None:
        """The access port is listening (AGW is TLS server)."""
        if self.state is State.RESERVED:
            self.state = State.LISTENING

    def configure(
        self,
        fingerprints: Iterable[Fingerprint] | None,
        now: float,
        *,
        establish_tls: bool = False,
        start_timer: bool = True,
    ) -> list[Event]:
        """The ALG gave (more) parameters: the UE's fingerprints, maybe "establish TLS".

        A configuration after the reservation (the Modify that follows the SDP answer, which is
        when the UE learns where to connect) starts the TLS establishment timer; the
        reservation itself (``start_timer=False``) does not, so a long ringing phase never
        fails a stream. Every held attempt is decided once fingerprints are known."""
        events: list[Event] = []
        if self.state in (State.CLOSED, State.FAILED):
            return events
        if fingerprints is not None:
            self.fingerprints = tuple(fingerprints)
        if establish_tls and self.state is State.RESERVED:
            self.state = State.CONNECTING
        if start_timer:
            self.start_establishment_timer(now)
        if self.fingerprints:
            for attempt in list(self.attempts.values()):
                if attempt.state is AttemptState.HELD:
                    events.extend(self._decide(attempt, now))
        return events

    def start_establishment_timer(self, now: float) -> None:
        if self.establishment_deadline is None and self.verified_attempt is None:
            self.establishment_deadline = now + self.timers.establishment

    # -- access attempts --

    def attempt_started(self, peer: str, now: float) -> int | None:
        """A TCP connection to/from the UE side is up. Returns its attempt id, or ``None`` if
        this termination takes no more attempts (already verified, closed, failed)."""
        if self.state not in (State.LISTENING, State.CONNECTING, State.RESERVED):
            return None
        attempt = Attempt(self._next_attempt, peer, now)
        self._next_attempt += 1
        self.attempts[attempt.id] = attempt
        return attempt.id

    def certificate_presented(self, attempt_id: int, der: bytes | None, now: float) -> bool:
        """During the handshake (verify callback): may the handshake go on?

        ``False`` makes the TLS stack send an alert; the cause is remembered for
        :meth:`handshake_failed`. With no fingerprint yet, policy ``hold`` lets it go on (the
        decision is taken at handshake completion or later)."""
        attempt = self.attempts.get(attempt_id)
        if attempt is None or attempt.state is not AttemptState.HANDSHAKING:
            return False
        if not self.fingerprints:
            if self.early_policy == "reject":
                attempt.refused_cause = "fingerprint-unknown"
                return False
            return der is not None
        verdict = check_certificate(der, self.fingerprints, accepted_hashes=self.accepted_hashes)
        if not verdict.accepted:
            attempt.refused_cause = verdict.cause
        return verdict.accepted

    def handshake_done(self, attempt_id: int, der: bytes | None, now: float) -> list[Event]:
        """The handshake completed. The authoritative check, before any application byte."""
        attempt = self.attempts.get(attempt_id)
        if attempt is None or attempt.state is not AttemptState.HANDSHAKING:
            return []
        attempt.der = der
        return self._decide(attempt, now)

    def handshake_failed(
        self, attempt_id: int, cause: FailureCause, now: float, detail: str = ""
    ) -> list[Event]:
        """The handshake (or the TCP connect, AGW as client) failed."""
        attempt = self.attempts.get(attempt_id)
        if attempt is None or attempt.state not in (AttemptState.HANDSHAKING, AttemptState.HELD):
            return []
        return self._refuse(attempt, attempt.refused_cause or cause, detail)

    def attempt_lost(self, attempt_id: int, now: float) -> list[Event]:
        """The peer went away during the handshake or while held."""
        attempt = self.attempts.get(attempt_id)
        if attempt is None or attempt.state not in (AttemptState.HANDSHAKING, AttemptState.HELD):
            return []
        return self._refuse(attempt, attempt.refused_cause or "handshake-failure", "peer closed")

    def _decide(self, attempt: Attempt, now: float) -> list[Event]:
        if self.verified_attempt is not None or self.state in (State.CLOSED, State.FAILED):
            return self._refuse(attempt, "handshake-failure", "termination not accepting")
        if not self.fingerprints:
            if attempt.der is None:
                return self._refuse(attempt, "no-certificate", "")
            if self.early_policy == "reject":
                return self._refuse(attempt, "fingerprint-unknown", "policy reject")
            if attempt.hold_until is None:
                attempt.state = AttemptState.HELD
                attempt.hold_until = now + self.timers.hold
                self.start_establishment_timer(now)
                return [HoldAttempt(self.id, attempt.id, attempt.hold_until)]
            return []
        verdict = check_certificate(
            attempt.der, self.fingerprints, accepted_hashes=self.accepted_hashes
        )
        if not verdict.accepted or verdict.fingerprint is None:
            return self._refuse(attempt, verdict.cause or "fingerprint-mismatch", "")
        attempt.state = AttemptState.VERIFIED
        self.verified_attempt = attempt.id
        self.verified_fingerprint = verdict.fingerprint
        self.establishment_deadline = None
        self.state = State.VERIFIED
        self.last_activity = now
        events: list[Event] = [
            TlsEstablished(self.id, attempt.id, verdict.fingerprint, attempt.peer)
        ]
        # Every other attempt still in progress is refused: one verified session per termination.
        for other in list(self.attempts.values()):
            if other.state in (AttemptState.HANDSHAKING, AttemptState.HELD):
                events.extend(
                    self._refuse(other, "handshake-failure", "termination already verified")
                )
        if self.core_up:
            self.state = State.RELAYING
            events.append(StartRelay(self.id))
        elif self.core_role == "connect":
            events.append(ConnectCore(self.id))
        return events

    def _refuse(self, attempt: Attempt, cause: FailureCause, detail: str) -> list[Event]:
        attempt.state = AttemptState.REFUSED
        attempt.refused_cause = cause
        self.failures[cause] = self.failures.get(cause, 0) + 1
        self.last_failure = cause
        return [TlsFailure(self.id, attempt.id, cause, attempt.peer, detail)]

    # -- the core leg --

    def core_connected(self, now: float) -> list[Event]:
        """The core TCP leg is up (accepted or connected)."""
        if self.state in (State.CLOSED, State.FAILED) or self.core_up:
            return []
        self.core_up = True
        if self.state is State.VERIFIED:
            self.state = State.RELAYING
            self.last_activity = now
            return [StartRelay(self.id)]
        return []

    def core_failed(self, reason: str, now: float) -> list[Event]:
        """The core leg could not be set up (connect refused)."""
        if self.state in (State.CLOSED, State.FAILED):
            return []
        return [TcpFailure(self.id, "core", reason), *self._close("core-failed", clean=False)]

    # -- relay --

    def relayed(self, direction: Literal["to_core", "to_ue"], nbytes: int, now: float) -> None:
        """Count one read of ``nbytes`` moved in ``direction``."""
        if direction == "to_core":
            self.bytes_to_core += nbytes
            self.packets_to_core += 1
        else:
            self.bytes_to_ue += nbytes
            self.packets_to_ue += 1
        self.last_activity = now

    def leg_closed(self, side: Side, *, clean: bool, reason: str, now: float) -> list[Event]:
        """A leg is gone for good (both directions): close the other one and report."""
        if self.state in (State.CLOSED, State.FAILED):
            return []
        events: list[Event] = []
        if not clean:
            events.append(TcpFailure(self.id, side, reason))
        events.extend(self._close(f"{side}-closed" if clean else f"{side}-{reason}", clean=clean))
        return events

    def release(self, now: float) -> TerminationStats:
        """The ALG released the termination (Subtract): everything closes, stats are final."""
        if self.state not in (State.CLOSED, State.FAILED):
            self.state = State.CLOSED
            self.close_reason = "released"
        return self.stats()

    def _close(self, reason: str, *, clean: bool) -> list[Event]:
        self.state = State.CLOSED
        self.close_reason = reason
        return [Closed(self.id, reason, clean, self.stats())]

    # -- time --

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`poll` has something to do, or ``None``."""
        deadlines: list[float] = []
        if self.state in (State.CLOSED, State.FAILED):
            return None
        if self.establishment_deadline is not None:
            deadlines.append(self.establishment_deadline)
        for attempt in self.attempts.values():
            if attempt.state is AttemptState.HANDSHAKING:
                deadlines.append(attempt.started + self.timers.handshake)
            elif attempt.state is AttemptState.HELD and attempt.hold_until is not None:
                deadlines.append(attempt.hold_until)
        if self.timers.idle is not None and self.state in (State.VERIFIED, State.RELAYING):
            deadlines.append(self.last_activity + self.timers.idle)
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> list[Event]:
        """Fire every timer that is due at ``now``."""
        events: list[Event] = []
        if self.state in (State.CLOSED, State.FAILED):
            return events
        for attempt in list(self.attempts.values()):
            if (
                attempt.state is AttemptState.HANDSHAKING
                and now >= attempt.started + self.timers.handshake
            ):
                events.extend(self._refuse(attempt, "handshake-timeout", ""))
            elif (
                attempt.state is AttemptState.HELD
                and attempt.hold_until is not None
                and now >= attempt.hold_until
            ):
                events.extend(self._refuse(attempt, "fingerprint-unknown", "hold time ran out"))
        if self.establishment_deadline is not None and now >= self.establishment_deadline:
            for attempt in list(self.attempts.values()):
                if attempt.state in (AttemptState.HANDSHAKING, AttemptState.HELD):
                    events.extend(self._refuse(attempt, "handshake-timeout", ""))
            self.state = State.FAILED
            self.establishment_deadline = None
            self.close_reason = "tls-establishment-timeout"
            self.last_failure = self.last_failure or "handshake-timeout"
            events.append(StreamFailed(self.id, self.last_failure))
        elif (
            self.timers.idle is not None
            and self.state in (State.VERIFIED, State.RELAYING)
            and now >= self.last_activity + self.timers.idle
        ):
            events.extend(self._close("idle-timeout", clean=True))
        return events

    # -- statistics --

    def stats(self) -> TerminationStats:
        if self.verified_attempt is not None:
            tls_result = "verified"
        else:
            tls_result = self.last_failure or "pending"
        return TerminationStats(
            termination=self.id,
            stream=self.stream,
            bytes_to_core=self.bytes_to_core,
            bytes_to_ue=self.bytes_to_ue,
            packets_to_core=self.packets_to_core,
            packets_to_ue=self.packets_to_ue,
            tls_result=tls_result,
            fingerprint=None
            if self.verified_fingerprint is None
            else self.verified_fingerprint.value,
            failed_attempts=sum(self.failures.values()),
            failures=tuple(sorted(self.failures.items())),
            state=self.state.value,
            close_reason=self.close_reason,
        )
