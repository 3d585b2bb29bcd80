"""The e2ae SDP rewrite of the P-CSCF (IMS-ALG): pure, one function per offer/answer step.

Steps (TS 33.328 clauses 7.2.1 and 7.3.1; the rules are docs/protocol.md §3, §4 and §5):

- ``orig-offer``: an offer from the UE, rewritten towards the core;
- ``orig-answer``: the core's answer to it, rewritten towards the UE;
- ``term-offer``: an offer from the core, rewritten towards the UE;
- ``term-answer``: the UE's answer to it, rewritten towards the core.

Use, in the order a proxy needs it:

1. :func:`plan_offer` ``(step, sdp, ue_mechanisms, policy) -> OfferPlan``: classify every stream
   of an offer (:class:`StreamPlan`: treatment ``e2ae``/``e2e``/``passthrough``/``rejected``,
   protos in and out, the UE's usable fingerprints, the a=setup values and the AGW's TLS role on
   the access side, the offerer's address and port). Raises :class:`RemoteRewriteError` (SIP 488)
   when an e2ae request has no usable fingerprint, or when policy refuses a TLS stream that asks
   for neither e2ae nor KMS.
2. Reserve one AGW access + core termination pair per ``plan.e2ae_streams`` (over Iq in the
   proxy; :func:`deterministic_reservations` for the offline CLI), giving a
   :class:`AgwAddresses` each: addresses, ports, the AGW's fingerprint.
3. :func:`rewrite_offer` ``(sdp, plan, reservations) -> RewriteResult``: the offer to forward and
   the :class:`RewriteState` to keep for the answer.
4. :func:`rewrite_answer` ``(step, sdp, state) -> RewriteResult``: the answer to forward, plus
   :class:`AgwUpdate` per e2ae stream: what the AGW must now be told (the core peer's address,
   port and the AGW's core-side setup after ``orig-answer``; the UE's fingerprints, address,
   port and the AGW's access TLS role after ``term-answer``; or that the stream was rejected and
   its terminations can be released).

:meth:`RewriteState.to_json` / :meth:`RewriteState.from_json` make the state a JSON document
(the CLI's ``--state`` file).

Rules in short: streams that are not e2ae are not touched (byte for byte), m-line count and
order never change. An e2ae stream gets the proto of the side it goes to, the AGW's port and a
media-level ``c=`` of the AGW termination; towards the core every fingerprint and ``a=3ge2ae``
is removed; towards the UE every fingerprint is replaced by exactly the AGW's, followed by
``a=3ge2ae:applied`` (both appended at the end of the media section). When the SDP has e2ae
streams, session-level ``a=fingerprint`` lines leave the session level, after being copied to
every other stream with a TLS/DTLS proto and no fingerprint of its own. ``a=setup``: the AGW
access side prefers passive, the UE's role is carried to the core side; a value is written only
where it differs from what the line (or the RFC 4145 default) already says. See
docs/sdp-rewrite.md.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple, cast, get_args

import attrs

from certs.errors import InvalidFingerprint, UnsupportedHash
from certs.fingerprint import Fingerprint
from e2ae.tcpmedia import SETUPS, VALID_ANSWERS, Setup, TlsRole, answer_to, tls_role
from pcscf.errors import (
    LocalPcscfError,
    LocalRewriteError,
    PolicyRefusal,
    RemoteRewriteError,
    SdpError,
)
from pcscf.policy import Policy
from pcscf.sdp import (
    Connection,
    MediaSection,
    MLine,
    Section,
    SessionDescription,
    _connection_for_ip,
    _parse_fingerprint,
    _removal_pattern,
    _rewritten_piece,
    _values_finder,
)

Step = Literal["orig-offer", "orig-answer", "term-offer", "term-answer"]
STEPS: tuple[Step, ...] = get_args(Step)
OFFER_STEPS: tuple[Step, ...] = ("orig-offer", "term-offer")
Treatment = Literal["e2ae", "e2e", "passthrough", "rejected"]

#: Plain proto towards the core -> TLS proto towards the UE, and the mechanism that governs it.
TLS_PROTO: dict[str, str] = {"TCP/MSRP": "TCP/TLS/MSRP", "TCP/BFCP": "TCP/TLS/BFCP"}
PLAIN_PROTO: dict[str, str] = {tls: plain for plain, tls in TLS_PROTO.items()}
MECHANISM: dict[str, str] = {
    "TCP/MSRP": "msrp-tls",
    "TCP/TLS/MSRP": "msrp-tls",
    "TCP/BFCP": "bfcp-tls",
    "TCP/TLS/BFCP": "bfcp-tls",
}
STATE_VERSION = 1
_tuple_eq = tuple.__eq__
#: ``tuple.__new__``: the fast ways build the plans and states from their fields' tuple.
_tnew = tuple.__new__
#: The fields of a StreamPlan after ``fingerprints`` when the stream is not e2ae.
_NONE7 = (None,) * 7


class StreamPlan(NamedTuple):
    """What the ALG does with one stream (one m-line), as decided from an offer.

    ``fingerprints`` are the UE's usable ones (hash in the policy's accepted list), effective for
    the stream (media level over session level); empty where the UE has not spoken yet
    (``term-offer``). ``ue_setup`` is the UE's a=setup (offered in ``orig-offer``, answered in
    ``term-answer``). ``access_setup`` / ``core_setup`` are the AGW's own a=setup towards the UE
    and towards the core: for ``orig-offer`` the access one is the answer to come and the core
    one is offered now; for ``term-offer`` the access one is offered now and the core one is
    decided by the UE's answer. ``access_role`` is the AGW's TLS role towards the UE (``server``
    when the UE connects, ``client`` when the AGW must establish TLS), ``None`` while undecided
    or on hold. ``remote_address``/``remote_port`` are the offerer's (the UE in ``orig-offer``,
    the core peer in ``term-offer``); ``offer_setup`` is the a=setup the offerer gave (RFC 4145
    default ``active`` when absent).

    Immutable; compares equal only to another StreamPlan with the same fields (a tuple
    underneath: made per stream and call, so built the cheapest way Python has).
    """

    index: int  # type: ignore[assignment]  # the field, not tuple.index
    media: str
    proto_in: str
    proto_out: str
    treatment: Treatment
    fingerprints: tuple[Fingerprint, ...] = ()
    offer_setup: Setup | None = None
    ue_setup: Setup | None = None
    access_setup: Setup | None = None
    core_setup: Setup | None = None
    access_role: TlsRole | None = None
    remote_address: str | None = None
    remote_port: int | None = None

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and _tuple_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


class OfferPlan(NamedTuple):
    """The classification of an offer, stream by stream (index = m-line position).

    Immutable; equal only to another OfferPlan with the same fields."""

    step: Step
    streams: tuple[StreamPlan, ...]
    accepted_hash_funcs: tuple[str, ...]

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and _tuple_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    @property
    def e2ae_streams(self) -> tuple[StreamPlan, ...]:
        """The streams that need an AGW reservation."""
        return tuple(s for s in self.streams if s.treatment == "e2ae")


class AgwAddresses(NamedTuple):
    """The AGW's side of one e2ae stream as the SDP shows it: its access and core addresses and
    its fingerprint, taken from the Iq reply (:class:`iq.profile.ReservedStream`). Immutable;
    equal only to another AgwAddresses with the same fields."""

    access_address: str
    access_port: int
    core_address: str
    core_port: int
    fingerprint: Fingerprint

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and _tuple_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


class StreamState(NamedTuple):
    """A stream's plan and, for an e2ae stream, its AGW reservation. Immutable; equal only to
    another StreamState with the same fields."""

    plan: StreamPlan
    reservation: AgwAddresses | None = None

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and _tuple_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


class RewriteState(NamedTuple):
    """What an answer step needs from its offer step; JSON round-trips (the ``--state`` file).
    Immutable; equal only to another RewriteState with the same fields."""

    step: Step
    streams: tuple[StreamState, ...]
    accepted_hash_funcs: tuple[str, ...]

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and _tuple_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "accepted_hash_funcs": list(self.accepted_hash_funcs),
            "streams": [_stream_state_to_json(s) for s in self.streams],
        }

    @classmethod
    def from_json(cls, data: Any) -> RewriteState:
        """Rebuild from :meth:`to_json` output; raises LocalRewriteError if it is not one."""
        try:
            if data["version"] != STATE_VERSION:
                raise LocalRewriteError(f"unsupported state version {data['version']!r}")
            step = data["step"]
            if step not in OFFER_STEPS:
                raise LocalRewriteError(f"state is not from an offer step: {step!r}")
            return cls(
                step=step,
                accepted_hash_funcs=tuple(str(h) for h in data["accepted_hash_funcs"]),
                streams=tuple(_stream_state_from_json(s) for s in data["streams"]),
            )
        except (KeyError, TypeError, ValueError, InvalidFingerprint) as exc:
            if isinstance(exc, LocalRewriteError):
                raise
            raise LocalRewriteError(f"not a rewrite state: {exc!r}") from exc


@attrs.frozen
class AgwUpdate:
    """What the AGW must be told about one e2ae stream after an answer.

    ``release``: the answerer rejected the stream (port 0); free its terminations. Otherwise
    ``side`` is the termination whose remote end is now known (``core`` after ``orig-answer``,
    ``access`` after ``term-answer``), with the remote ``address``/``port``; ``core_setup`` is
    the AGW's a=setup on the core side (``active``: the AGW connects to the core peer);
    ``access_role`` the AGW's TLS role towards the UE (``client``: establish TLS);
    ``fingerprints`` the UE's, to pin on the access side (after ``term-answer``).
    """

    index: int
    release: bool
    side: Literal["access", "core"]
    remote_address: str | None = None
    remote_port: int | None = None
    core_setup: Setup | None = None
    access_role: TlsRole | None = None
    fingerprints: tuple[Fingerprint, ...] = ()


class RewriteResult(NamedTuple):
    """The rewritten SDP, the state after this step, the streams as seen in this step, and
    (answer steps) what the AGW must be told. Immutable (the SDP excepted); equal only to
    another RewriteResult with the same fields."""

    sdp: SessionDescription
    state: RewriteState
    streams: tuple[StreamPlan, ...]
    agw_updates: tuple[AgwUpdate, ...] = ()

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and _tuple_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


# --- internals -------------------------------------------------------------------------------


def _setup_of(sdp: SessionDescription, index: int, default: Setup) -> Setup:
    values = sdp.effective_attribute_values(index, "setup")
    if not values:
        return default
    value = values[0].strip().lower()
    if value not in SETUPS:
        raise SdpError(sdp.line_number_of(index, "setup"), f"unknown a=setup value {values[0]!r}")
    return value


def _write_setup(sdp: SessionDescription, index: int, value: Setup, default: Setup) -> None:
    """Make the stream's effective a=setup ``value``, writing a line only if it differs."""
    section = sdp.media[index]
    own = section.attribute_values("setup")
    if own:
        if own[0].strip().lower() != value or len(own) > 1:
            section.set_attribute("setup", value)
        return
    session = sdp.session.attribute_values("setup")
    current = session[0].strip().lower() if session else default
    if current != value:
        section.add_attribute("setup", value)


@functools.lru_cache(maxsize=64)
def _fingerprint_value(fingerprint: Fingerprint) -> str:
    """``fingerprint.value``, kept: the AGW's fingerprint is written into every answer."""
    return fingerprint.value


def _mechanism_ok(proto: str, ue_mechanisms: frozenset[str], policy: Policy) -> bool:
    mechanism = MECHANISM[proto]
    if mechanism not in policy.network_mechanisms:
        return False
    return mechanism in ue_mechanisms or not policy.require_registration_indication


def _requested(section: MediaSection) -> bool:
    return section.has_attribute("3ge2ae", "requested")


def _has_key_mgmt(sdp: SessionDescription, index: int) -> bool:
    return bool(sdp.effective_attribute_values(index, "key-mgmt"))


def _canonical_proto(proto: str) -> str:
    upper = proto.upper()
    return upper if upper in MECHANISM else proto


def _remote(sdp: SessionDescription, index: int, who: str) -> str:
    conn = sdp.effective_connection(index)
    if conn is None:
        raise RemoteRewriteError(index, f"{who} gave no c= line (session or media level)")
    return conn.host


def _relies_on_fingerprint(section: MediaSection) -> bool:
    parts = section.proto.upper().split("/")
    return ("TLS" in parts or "DTLS" in parts) and not section.has_attribute("fingerprint")


def _move_session_fingerprints(sdp: SessionDescription, rewritten: set[int]) -> None:
    """Session a=fingerprint lines leave the session level, copied to streams relying on them."""
    lines = sdp.session.attribute_lines("fingerprint")
    if not lines:
        return
    for i, section in enumerate(sdp.media):
        if i not in rewritten and _relies_on_fingerprint(section):
            section.add_lines(lines)
    sdp.session.remove_attributes("fingerprint")


def _ue_fingerprints(
    sdp: SessionDescription, index: int, accepted: tuple[str, ...]
) -> tuple[Fingerprint, ...]:
    return tuple(sdp.effective_fingerprints(index, accepted))


def _require_fingerprints(
    sdp: SessionDescription, index: int, accepted: tuple[str, ...], why: str
) -> tuple[Fingerprint, ...]:
    fps = _ue_fingerprints(sdp, index, accepted)
    if not fps:
        found = sdp.effective_attribute_values(index, "fingerprint")
        detail = (
            "no a=fingerprint"
            if not found
            else f"no a=fingerprint with an accepted hash ({', '.join(accepted)}); "
            f"found {', '.join(v.split()[0] if v.split() else '?' for v in found)}"
        )
        raise RemoteRewriteError(index, f"{why} but {detail}")
    return fps


# --- offers ----------------------------------------------------------------------------------


def plan_offer(
    step: Step,
    sdp: SessionDescription,
    ue_mechanisms: Iterable[str],
    policy: Policy,
) -> OfferPlan:
    """Classify every stream of an offer (``orig-offer`` or ``term-offer``)."""
    if step not in OFFER_STEPS:
        raise LocalRewriteError(f"plan_offer needs an offer step, not {step!r}")
    mechanisms = frozenset([m.strip().lower() for m in ue_mechanisms if m.strip()])
    pieces, mlines = sdp._pieces, sdp._mlines
    if pieces is not None and mlines is not None:
        try:
            return _plan_fast(step, pieces, mlines, mechanisms, policy)
        except _General:
            pass
    accepted = policy.accepted_hash_funcs
    plans: list[StreamPlan] = []
    session_fps: tuple[Fingerprint, ...] | None = None  # the same for every stream without its own
    for index, section in enumerate(sdp.media):
        proto = _canonical_proto(section.proto)
        if step == "orig-offer":
            own = section.attribute_values("fingerprint")
            if own:
                fps = tuple(sdp._usable_fingerprints(own, index, accepted))
            else:
                if session_fps is None:
                    values = sdp.session.attribute_values("fingerprint")
                    session_fps = tuple(sdp._usable_fingerprints(values, index, accepted))
                fps = session_fps
            if section.port == 0:
                treatment: Treatment = "rejected"
            elif proto in PLAIN_PROTO:
                plan = _plan_orig_tls(sdp, index, proto, fps, mechanisms, policy)
                if plan is not None:
                    plans.append(plan)
                    continue
                e2e = not _requested(section) and _has_key_mgmt(sdp, index)
                treatment = "e2e" if e2e else "passthrough"
            else:
                treatment = "passthrough"
        else:
            fps = ()
            if section.port == 0:
                treatment = "rejected"
            elif proto in TLS_PROTO and _mechanism_ok(proto, mechanisms, policy):
                plans.append(_plan_term_e2ae(sdp, index, proto))
                continue
            elif proto in PLAIN_PROTO and _has_key_mgmt(sdp, index):
                treatment = "e2e"
            else:
                treatment = "passthrough"
        plans.append(StreamPlan(index, section.media, section.proto, section.proto, treatment, fps))
    return OfferPlan(step, tuple(plans), accepted)


class _General(Exception):
    """The fast plan met something only the general one says right (an error, mostly)."""


_fingerprint_values = _values_finder("fingerprint")
_setup_values = _values_finder("setup")
_e2ae_values = _values_finder("3ge2ae")
_key_mgmt_values = _values_finder("key-mgmt")


def _first_connection(text: str) -> str | None:
    """The value of the first ``c=`` line after the first line of a section's text
    (:attr:`Section.connection`)."""
    at = text.find("\nc=")
    if at < 0:
        return None
    end = text.find("\r", at)
    return text[at + 3 : end] if end > 0 else text[at + 3 :]


def _fast_fingerprints(values: list[str], accepted: tuple[str, ...]) -> tuple[Fingerprint, ...]:
    """:meth:`SessionDescription._usable_fingerprints`; _General where that raises."""
    out: list[Fingerprint] = []
    for value in values:
        try:
            fp = _parse_fingerprint(value)
        except UnsupportedHash:
            continue
        except InvalidFingerprint:
            raise _General from None
        if fp.hash_func in accepted:
            out.append(fp)
    return tuple(out)


#: a=setup value (stripped, lower case) -> the Setup; the answer to each; its TLS role.
_SETUP_OF: dict[str, Setup] = {setup: setup for setup in SETUPS}
_ANSWER_TO: dict[Setup, Setup] = {setup: answer_to(setup) for setup in SETUPS}
_TLS_ROLE: dict[Setup, TlsRole | None] = {setup: tls_role(setup) for setup in SETUPS}


def _fast_setup(own: list[str], session: str) -> Setup:
    """:func:`_setup_of` with the default ``active``; _General for an unknown value."""
    values = own or _setup_values(session)
    if not values:
        return "active"
    value = values[0].strip().lower()
    if value not in SETUPS:
        raise _General
    return value


def _fast_host(piece: str, session: str) -> str:
    """The host of the stream's effective ``c=`` (three fields: the fast parser checked)."""
    value = _first_connection(piece)
    if value is None:
        value = _first_connection(session)
        if value is None:
            raise _General
    return value.split()[2].split("/", 1)[0]


def _plan_fast(
    step: Step,
    pieces: list[str],
    mlines: list[MLine],
    mechanisms: frozenset[str],
    policy: Policy,
) -> OfferPlan:
    """:func:`plan_offer` of a description still in pieces (parsed the fast way, not looked at):
    the values are read from each section's text, only those the stream's plan needs. Raises
    _General wherever the general plan raises, which then says why."""
    accepted = policy.accepted_hash_funcs
    if step != "orig-offer":
        return _tnew(
            OfferPlan, (step, _plan_term_fast(pieces, mlines, mechanisms, policy), accepted)
        )
    session = pieces[0]
    session_fps: tuple[Fingerprint, ...] | None = None
    session_key_mgmt: bool | None = None
    session_setup: Setup | None = None
    session_host: str | None = None
    plans: list[StreamPlan] = []
    append = plans.append
    index = -1
    # The last single a=fingerprint read and what it gave: a UE has one certificate, so the
    # streams of one offer usually carry the same value, parsed once (within this call only).
    last_text: str | None = None
    last_fps: tuple[Fingerprint, ...] = ()
    for piece, (media, port, _count, proto_in, _fmts) in zip(pieces[1:], mlines, strict=True):
        index += 1
        fingerprint = _fingerprint_values(piece)
        if len(fingerprint) == 1:  # the common case of _fast_fingerprints, inline
            text = fingerprint[0]
            if text == last_text:
                fps: tuple[Fingerprint, ...] = last_fps
            else:
                try:
                    fp = _parse_fingerprint(text)
                except UnsupportedHash:
                    fps = ()
                except InvalidFingerprint:
                    raise _General from None
                else:
                    fps = (fp,) if fp.hash_func in accepted else ()
                last_text, last_fps = text, fps
        elif fingerprint:
            fps = _fast_fingerprints(fingerprint, accepted)
        else:
            if session_fps is None:
                session_fps = _fast_fingerprints(_fingerprint_values(session), accepted)
            fps = session_fps
        # the proto as _canonical_proto gives it, if it is a TLS one (PLAIN_PROTO's keys)
        plain = PLAIN_PROTO.get(proto_in)
        if plain is None and not proto_in.isupper():
            plain = PLAIN_PROTO.get(proto_in.upper())
        if port == 0 or plain is None:
            treatment: Treatment = "rejected" if port == 0 else "passthrough"
            append(_tnew(StreamPlan, (index, media, proto_in, proto_in, treatment, fps, *_NONE7)))
            continue
        requested = False
        for value in _e2ae_values(piece):
            if value == "requested" or value.strip().lower() == "requested":
                requested = True
                break
        if requested:
            mechanism = MECHANISM[plain]
            if mechanism in policy.network_mechanisms and (
                mechanism in mechanisms or not policy.require_registration_indication
            ):
                if not fps:
                    raise _General
                setups = _setup_values(piece)
                if setups:
                    value = setups[0]
                    ue_setup = _SETUP_OF.get(value) or _SETUP_OF.get(value.strip().lower())
                    if ue_setup is None:
                        raise _General
                else:
                    if session_setup is None:
                        session_setup = _fast_setup([], session)
                    ue_setup = session_setup
                at = piece.find("\nc=")
                if at >= 0:
                    end = piece.find("\r", at)
                    conn = piece[at + 3 : end] if end > 0 else piece[at + 3 :]
                    host = conn.split()[2].split("/", 1)[0]
                else:
                    if session_host is None:
                        session_host = _fast_host("", session)
                    host = session_host
                access_setup = _ANSWER_TO[ue_setup]
                append(
                    _tnew(
                        StreamPlan,
                        (
                            index,
                            media,
                            proto_in,
                            plain,
                            "e2ae",
                            fps,
                            ue_setup,
                            ue_setup,
                            access_setup,
                            ue_setup,
                            _TLS_ROLE[access_setup],
                            host,
                            port,
                        ),
                    )
                )
                continue
        else:
            key_mgmt = bool(_key_mgmt_values(piece))
            if not key_mgmt:
                if session_key_mgmt is None:
                    session_key_mgmt = bool(_key_mgmt_values(session))
                key_mgmt = session_key_mgmt
            if key_mgmt:
                append(_tnew(StreamPlan, (index, media, proto_in, proto_in, "e2e", fps, *_NONE7)))
                continue
        if policy.non_e2ae_tls == "reject":
            raise _General
        append(_tnew(StreamPlan, (index, media, proto_in, proto_in, "passthrough", fps, *_NONE7)))
    return _tnew(OfferPlan, (step, tuple(plans), accepted))


def _plan_term_fast(
    pieces: list[str],
    mlines: list[MLine],
    mechanisms: frozenset[str],
    policy: Policy,
) -> tuple[StreamPlan, ...]:
    """The streams of :func:`_plan_fast` for a ``term-offer``."""
    session = pieces[0]
    session_key_mgmt: bool | None = None
    plans: list[StreamPlan] = []
    index = -1
    for piece, (media, port, _count, proto_in, _fmts) in zip(pieces[1:], mlines, strict=True):
        index += 1
        upper = proto_in.upper()
        proto = upper if upper in MECHANISM else proto_in
        if port == 0:
            treatment: Treatment = "rejected"
        elif proto in TLS_PROTO and _mechanism_ok(proto, mechanisms, policy):
            core_offer = _fast_setup(_setup_values(piece), session)
            access = _term_access_setup(core_offer)
            plans.append(
                _tnew(
                    StreamPlan,
                    (
                        index,
                        media,
                        proto_in,
                        TLS_PROTO[proto],
                        "e2ae",
                        (),
                        core_offer,
                        None,
                        access,
                        None,
                        _TLS_ROLE[access],
                        _fast_host(piece, session),
                        port,
                    ),
                )
            )
            continue
        elif proto in PLAIN_PROTO:
            key_mgmt = bool(_key_mgmt_values(piece))
            if not key_mgmt:
                if session_key_mgmt is None:
                    session_key_mgmt = bool(_key_mgmt_values(session))
                key_mgmt = session_key_mgmt
            treatment = "e2e" if key_mgmt else "passthrough"
        else:
            treatment = "passthrough"
        plans.append(_tnew(StreamPlan, (index, media, proto_in, proto_in, treatment, (), *_NONE7)))
    return tuple(plans)


def _plan_orig_tls(
    sdp: SessionDescription,
    index: int,
    proto: str,
    fps: tuple[Fingerprint, ...],
    mechanisms: frozenset[str],
    policy: Policy,
) -> StreamPlan | None:
    """The plan of an e2ae stream, or None for e2e / passthrough (or raise per policy)."""
    section = sdp.media[index]
    requested = _requested(section)
    if requested and _mechanism_ok(proto, mechanisms, policy):
        if not fps:
            _require_fingerprints(sdp, index, policy.accepted_hash_funcs, "a=3ge2ae:requested")
        ue_setup = _setup_of(sdp, index, "active")
        access_setup = answer_to(ue_setup)
        return StreamPlan(
            index,
            section.media,
            section.proto,
            PLAIN_PROTO[proto],
            "e2ae",
            fps,
            offer_setup=ue_setup,
            ue_setup=ue_setup,
            access_setup=access_setup,
            core_setup=ue_setup,
            access_role=tls_role(access_setup),
            remote_address=_remote(sdp, index, "the UE"),
            remote_port=section.port,
        )
    if not requested and _has_key_mgmt(sdp, index):
        return None
    if policy.non_e2ae_tls == "reject":
        why = (
            f"a=3ge2ae:requested but {MECHANISM[proto]} was not registered"
            if requested
            else "TLS stream with neither a=3ge2ae:requested nor a=key-mgmt"
        )
        raise PolicyRefusal(index, f"{why} (policy non_e2ae_tls = reject)")
    return None


def _term_access_setup(core_offer: Setup) -> Setup:
    """The a=setup in the offer to the terminating UE for the one the core offered: actpass
    and holdconn kept, anything else passive (the AGW waits for the UE's connection)."""
    if core_offer in ("actpass", "holdconn"):
        return core_offer
    return "passive"


def _plan_term_e2ae(sdp: SessionDescription, index: int, proto: str) -> StreamPlan:
    section = sdp.media[index]
    core_offer = _setup_of(sdp, index, "active")
    access_setup = _term_access_setup(core_offer)
    return StreamPlan(
        index,
        section.media,
        section.proto,
        TLS_PROTO[proto],
        "e2ae",
        offer_setup=core_offer,
        access_setup=access_setup,
        access_role=tls_role(access_setup),
        remote_address=_remote(sdp, index, "the core"),
        remote_port=section.port,
    )


def rewrite_offer(
    sdp: SessionDescription,
    plan: OfferPlan,
    reservations: Mapping[int, AgwAddresses],
) -> RewriteResult:
    """Rewrite an offer as planned, with the AGW's reservation for every e2ae stream.

    ``sdp`` is not modified; the result holds an edited copy.
    """
    pieces, mlines = sdp._pieces, sdp._mlines
    if pieces is not None and mlines is not None:
        try:
            return _rewrite_fast(pieces, mlines, plan, reservations)
        except _General:
            pass
    if len(plan.streams) != len(sdp.media):
        raise LocalRewriteError(
            f"plan has {len(plan.streams)} streams, SDP has {len(sdp.media)} m-lines"
        )
    streams = plan.streams
    if any(stream.index != position for position, stream in enumerate(streams)):
        return _rewrite_offer_by_index(sdp, plan, reservations)
    media: list[MediaSection] = []
    out = SessionDescription(sdp.session._copy(), media)
    states: list[StreamState] = []
    rewritten: set[int] = set()
    orig = plan.step == "orig-offer"
    for stream, section in zip(streams, sdp.media, strict=True):
        if stream.treatment != "e2ae":
            states.append(StreamState(stream))
            media.append(section._copy())
            continue
        index = stream.index
        reservation = reservations.get(index)
        if reservation is None:
            raise LocalRewriteError(f"no AGW reservation for e2ae stream {index}")
        if orig:
            media.append(
                section._rewritten(
                    stream.proto_out, reservation.core_port, reservation.core_address, _REMOVED
                )
            )
            assert stream.core_setup is not None
            if stream.core_setup != stream.offer_setup:  # offer_setup: what the line says now
                _write_setup(out, index, stream.core_setup, "active")
        else:
            new = section._rewritten(
                stream.proto_out, reservation.access_port, reservation.access_address, _REMOVED
            )
            media.append(new)
            assert stream.access_setup is not None
            _write_setup(out, index, stream.access_setup, "active")
            new.add_attribute("fingerprint", _fingerprint_value(reservation.fingerprint))
            new.add_attribute("3ge2ae", "applied")
        rewritten.add(index)
        states.append(StreamState(stream, reservation))
    if rewritten:
        _move_session_fingerprints(out, rewritten)
    state = RewriteState(plan.step, tuple(states), plan.accepted_hash_funcs)
    return RewriteResult(out, state, tuple(streams))


#: What an e2ae stream loses on its way out of an offer step.
_REMOVED = ("fingerprint", "3ge2ae")


def _setup_written(piece: str, value: Setup, session: list[str], default: Setup) -> str:
    """:func:`_write_setup` on a section's text without its ``m=`` (``session``: the values of
    the session-level a=setup)."""
    own = _setup_values(piece)
    if own:
        if own[0].strip().lower() != value or len(own) > 1:
            section = Section(("m=" + piece).split("\r\n"))
            section.set_attribute("setup", value)
            return "\r\n".join(section.lines)[2:]
        return piece
    current = session[0].strip().lower() if session else default
    return piece if current == value else piece + "\r\na=setup:" + value


def _rewrite_fast(
    pieces: list[str],
    mlines: list[MLine],
    plan: OfferPlan,
    reservations: Mapping[int, AgwAddresses],
) -> RewriteResult:
    """:func:`rewrite_offer` of a description still in pieces, for a plan whose indexes are the
    positions: each e2ae stream's text is rewritten in a few string operations, the others are
    kept as they are, and the result is a description in pieces too. Raises _General wherever
    the general rewrite raises."""
    streams = plan.streams
    if len(streams) != len(mlines):
        raise _General
    orig = plan.step == "orig-offer"
    out_pieces = [pieces[0]]
    out_mlines: list[MLine] = []
    states: list[StreamState] = []
    rewritten = False
    session_setup: list[str] | None = None
    position = -1
    for stream, piece, mline in zip(streams, pieces[1:], mlines, strict=True):
        position += 1
        if stream.index != position:
            raise _General
        if stream.treatment != "e2ae":
            states.append(_tnew(StreamState, (stream, None)))
            out_pieces.append(piece)
            out_mlines.append(mline)
            continue
        reservation = reservations.get(stream.index)
        if reservation is None:
            raise _General
        proto = stream.proto_out
        if orig:
            port, ip = reservation.core_port, reservation.core_address
            setup = stream.core_setup
        else:
            port, ip = reservation.access_port, reservation.access_address
            setup = stream.access_setup
        if setup is None:
            raise _General
        try:
            new = _rewritten_piece(piece, mline, proto, port, ip, _REMOVED)
        except LocalPcscfError:
            raise _General from None
        if not orig or setup != stream.offer_setup:  # offer_setup: what the line says now
            if session_setup is None:
                session_setup = _setup_values(pieces[0])
            new = _setup_written(new, setup, session_setup, "active")
        if not orig:
            new = (
                f"{new}\r\na=fingerprint:{_fingerprint_value(reservation.fingerprint)}"
                "\r\na=3ge2ae:applied"
            )
        out_pieces.append(new)
        out_mlines.append((mline[0], port, None, proto, mline[4]))
        rewritten = True
        states.append(_tnew(StreamState, (stream, reservation)))
    if rewritten and _fingerprint_values(pieces[0]):
        _move_session_fingerprints_fast(out_pieces, out_mlines, streams)
    state = _tnew(RewriteState, (plan.step, tuple(states), plan.accepted_hash_funcs))
    sdp = SessionDescription._from_pieces(out_pieces, out_mlines)
    return _tnew(RewriteResult, (sdp, state, tuple(streams), ()))


def _move_session_fingerprints_fast(
    pieces: list[str], mlines: list[MLine], streams: tuple[StreamPlan, ...]
) -> None:
    """:func:`_move_session_fingerprints` on the pieces (changed in place)."""
    match = _removal_pattern(("fingerprint",))
    session = pieces[0].split("\r\n")
    lines = [line for line in session if match(line)]
    if not lines:
        return
    added = "\r\n" + "\r\n".join(lines)
    for position, (stream, mline) in enumerate(zip(streams, mlines, strict=True), 1):
        if stream.treatment == "e2ae":
            continue
        parts = mline[3].upper().split("/")
        piece = pieces[position]
        if ("TLS" in parts or "DTLS" in parts) and not _fingerprint_values(piece):
            pieces[position] = piece + added
    pieces[0] = "\r\n".join(line for line in session if not match(line))


def _rewrite_offer_by_index(
    sdp: SessionDescription,
    plan: OfferPlan,
    reservations: Mapping[int, AgwAddresses],
) -> RewriteResult:
    """:func:`rewrite_offer` for a plan whose stream indexes are not the positions 0, 1, ..."""
    if len(plan.streams) != len(sdp.media):
        raise LocalRewriteError(
            f"plan has {len(plan.streams)} streams, SDP has {len(sdp.media)} m-lines"
        )
    out = sdp.copy()
    states: list[StreamState] = []
    rewritten: set[int] = set()
    plans: list[StreamPlan] = []
    for stream in plan.streams:
        if stream.treatment != "e2ae":
            states.append(StreamState(stream))
            plans.append(stream)
            continue
        reservation = reservations.get(stream.index)
        if reservation is None:
            raise LocalRewriteError(f"no AGW reservation for e2ae stream {stream.index}")
        section = out.media[stream.index]
        if plan.step == "orig-offer":
            section.set_proto(stream.proto_out)
            section.set_port(reservation.core_port)
            section.set_connection(Connection.for_ip(reservation.core_address))
            section.remove_attributes("fingerprint", "3ge2ae")
            assert stream.core_setup is not None
            if stream.core_setup != stream.offer_setup:  # offer_setup: what the line says now
                _write_setup(out, stream.index, stream.core_setup, "active")
        else:
            section.set_proto(stream.proto_out)
            section.set_port(reservation.access_port)
            section.set_connection(Connection.for_ip(reservation.access_address))
            section.remove_attributes("fingerprint", "3ge2ae")
            assert stream.access_setup is not None
            _write_setup(out, stream.index, stream.access_setup, "active")
            section.add_attribute("fingerprint", _fingerprint_value(reservation.fingerprint))
            section.add_attribute("3ge2ae", "applied")
        rewritten.add(stream.index)
        states.append(StreamState(stream, reservation))
        plans.append(stream)
    if rewritten:
        _move_session_fingerprints(out, rewritten)
    state = RewriteState(plan.step, tuple(states), plan.accepted_hash_funcs)
    return RewriteResult(out, state, tuple(plans))


# --- answers ---------------------------------------------------------------------------------


def rewrite_answer(step: Step, sdp: SessionDescription, state: RewriteState) -> RewriteResult:
    """Rewrite an answer (``orig-answer`` or ``term-answer``) with its offer's state."""
    expected = {"orig-answer": "orig-offer", "term-answer": "term-offer"}.get(step)
    if expected is None:
        raise LocalRewriteError(f"rewrite_answer needs an answer step, not {step!r}")
    if state.step != expected:
        raise LocalRewriteError(f"{step} needs the state of {expected}, got {state.step}")
    if len(sdp.media) != len(state.streams):
        raise RemoteRewriteError(
            None, f"answer has {len(sdp.media)} m-lines, the offer had {len(state.streams)}"
        )
    out = sdp.copy()
    rewritten: set[int] = set()
    plans: list[StreamPlan] = []
    updates: list[AgwUpdate] = []
    for stream_state in state.streams:
        stream = stream_state.plan
        index = stream.index
        section = out.media[index]
        if stream.treatment != "e2ae":
            treatment: Treatment = "rejected" if section.port == 0 else stream.treatment
            plans.append(
                stream._replace(
                    proto_in=section.proto, proto_out=section.proto, treatment=treatment
                )
            )
            continue
        reservation = stream_state.reservation
        if reservation is None:
            raise LocalRewriteError(f"state has no AGW reservation for e2ae stream {index}")
        rewritten.add(index)
        if step == "orig-answer":
            plan, update = _orig_answer_stream(sdp, out, stream, reservation)
        else:
            plan, update = _term_answer_stream(sdp, out, stream, reservation, state)
        plans.append(plan)
        updates.append(update)
    if rewritten:
        _move_session_fingerprints(out, rewritten)
    return RewriteResult(out, state, tuple(plans), tuple(updates))


def _check_answer_proto(section: MediaSection, index: int, offered: str) -> None:
    if section.proto.upper() != offered.upper():
        raise RemoteRewriteError(
            index, f"answer proto {section.proto} does not match the offered {offered}"
        )


def _answer_setup(sdp: SessionDescription, index: int, offered: Setup, who: str) -> Setup:
    answered = _setup_of(sdp, index, "passive")
    if answered not in VALID_ANSWERS[offered]:
        raise RemoteRewriteError(
            index, f"{who} answered a=setup:{answered} to a=setup:{offered} (RFC 4145)"
        )
    return answered


def _orig_answer_stream(
    answer: SessionDescription,
    out: SessionDescription,
    stream: StreamPlan,
    reservation: AgwAddresses,
) -> tuple[StreamPlan, AgwUpdate]:
    index = stream.index
    section = out.media[index]
    proto_in = section.proto
    if section.port == 0:
        section.set_proto(stream.proto_in)
        section.remove_attributes("fingerprint")
        plan = stream._replace(proto_in=proto_in, proto_out=stream.proto_in, treatment="rejected")
        return plan, AgwUpdate(index, True, "core")
    _check_answer_proto(section, index, stream.proto_out)
    assert stream.core_setup is not None and stream.access_setup is not None
    core_answer = _answer_setup(answer, index, stream.core_setup, "the core")
    remote_address = _remote(answer, index, "the core")
    section.set_proto(stream.proto_in)
    section.set_port(reservation.access_port)
    section.set_connection(Connection.for_ip(reservation.access_address))
    section.remove_attributes("fingerprint", "3ge2ae")
    _write_setup(out, index, stream.access_setup, "passive")
    section.add_attribute("fingerprint", _fingerprint_value(reservation.fingerprint))
    section.add_attribute("3ge2ae", "applied")
    plan = stream._replace(
        proto_in=proto_in, proto_out=stream.proto_in, core_setup=answer_to(core_answer)
    )
    update = AgwUpdate(
        index,
        False,
        "core",
        remote_address=remote_address,
        remote_port=answer.media[index].port,
        core_setup=answer_to(core_answer),
        access_role=stream.access_role,
    )
    return plan, update


def _term_answer_stream(
    answer: SessionDescription,
    out: SessionDescription,
    stream: StreamPlan,
    reservation: AgwAddresses,
    state: RewriteState,
) -> tuple[StreamPlan, AgwUpdate]:
    index = stream.index
    section = out.media[index]
    proto_in = section.proto
    if section.port == 0:
        section.set_proto(stream.proto_in)
        section.remove_attributes("fingerprint", "3ge2ae")
        plan = stream._replace(proto_in=proto_in, proto_out=stream.proto_in, treatment="rejected")
        return plan, AgwUpdate(index, True, "access")
    _check_answer_proto(section, index, stream.proto_out)
    assert stream.access_setup is not None and stream.offer_setup is not None
    ue_answer = _answer_setup(answer, index, stream.access_setup, "the UE")
    fps = _require_fingerprints(
        answer, index, state.accepted_hash_funcs, "an e2ae stream was offered to the UE"
    )
    remote_address = _remote(answer, index, "the UE")
    agw_access: Setup = answer_to(ue_answer)
    # carry the UE's role to the core side where that is a valid answer to the core's offer
    core_answer: Setup = ue_answer
    if core_answer not in VALID_ANSWERS[stream.offer_setup]:
        core_answer = answer_to(core_answer)
    section.set_proto(stream.proto_in)
    section.set_port(reservation.core_port)
    section.set_connection(Connection.for_ip(reservation.core_address))
    section.remove_attributes("fingerprint", "3ge2ae")
    _write_setup(out, index, core_answer, "passive")
    plan = stream._replace(
        proto_in=proto_in,
        proto_out=stream.proto_in,
        fingerprints=fps,
        ue_setup=ue_answer,
        core_setup=core_answer,
        access_role=tls_role(agw_access),
    )
    update = AgwUpdate(
        index,
        False,
        "access",
        remote_address=remote_address,
        remote_port=answer.media[index].port,
        core_setup=core_answer,
        access_role=tls_role(agw_access),
        fingerprints=fps,
    )
    return plan, update


# --- the offline CLI's AGW ---------------------------------------------------------------------


def deterministic_reservations(
    plan: OfferPlan,
    *,
    access_address: str,
    core_address: str,
    fingerprint: Fingerprint,
    port_base: int,
) -> dict[int, AgwAddresses]:
    """Reservations as the offline CLI makes them: for the stream at m-line index ``i``, the
    access port is ``port_base + 2*i + 1`` and the core port ``port_base + 2*i + 2``."""
    for ip in (access_address, core_address):
        _connection_for_ip(ip)  # raises LocalPcscfError if not an IP address
    if not 0 <= port_base <= 65533:
        raise LocalRewriteError(f"port base must be 0-65533, not {port_base}")
    out: dict[int, AgwAddresses] = {}
    for stream in plan.streams:  # plan.e2ae_streams, without the tuple
        if stream.treatment != "e2ae":
            continue
        access = port_base + 2 * stream.index + 1
        core = access + 1
        if core > 65535:
            raise LocalRewriteError(
                f"port base {port_base} gives stream {stream.index} ports outside 1-65535"
            )
        addresses = (access_address, access, core_address, core, fingerprint)
        out[stream.index] = _tnew(AgwAddresses, addresses)
    return out


# --- JSON --------------------------------------------------------------------------------------


def stream_to_json(stream: StreamPlan) -> dict[str, Any]:
    """The ``--json`` form of a stream: index, media, proto_in, proto_out, treatment,
    fingerprints (the UE's, ``"<hash-func> <HEX:...>"``)."""
    return {
        "index": stream.index,
        "media": stream.media,
        "proto_in": stream.proto_in,
        "proto_out": stream.proto_out,
        "treatment": stream.treatment,
        "fingerprints": [fp.value for fp in stream.fingerprints],
    }


def _plan_to_json(plan: StreamPlan) -> dict[str, Any]:
    data = stream_to_json(plan)
    data.update(
        offer_setup=plan.offer_setup,
        ue_setup=plan.ue_setup,
        access_setup=plan.access_setup,
        core_setup=plan.core_setup,
        access_role=plan.access_role,
        remote_address=plan.remote_address,
        remote_port=plan.remote_port,
    )
    return data


def _stream_state_to_json(state: StreamState) -> dict[str, Any]:
    data = _plan_to_json(state.plan)
    r = state.reservation
    data["reservation"] = (
        None
        if r is None
        else {
            "access_address": r.access_address,
            "access_port": r.access_port,
            "core_address": r.core_address,
            "core_port": r.core_port,
            "fingerprint": r.fingerprint.value,
        }
    )
    return data


def _opt_setup(value: Any) -> Setup | None:
    if value is None:
        return None
    if value not in SETUPS:
        raise ValueError(f"bad setup value {value!r}")
    return cast(Setup, value)


def _stream_state_from_json(data: Any) -> StreamState:
    treatment = data["treatment"]
    if treatment not in get_args(Treatment):
        raise ValueError(f"bad treatment {treatment!r}")
    role = data["access_role"]
    if role not in (None, "server", "client"):
        raise ValueError(f"bad access_role {role!r}")
    plan = StreamPlan(
        index=int(data["index"]),
        media=str(data["media"]),
        proto_in=str(data["proto_in"]),
        proto_out=str(data["proto_out"]),
        treatment=treatment,
        fingerprints=tuple(Fingerprint.parse(v) for v in data["fingerprints"]),
        offer_setup=_opt_setup(data["offer_setup"]),
        ue_setup=_opt_setup(data["ue_setup"]),
        access_setup=_opt_setup(data["access_setup"]),
        core_setup=_opt_setup(data["core_setup"]),
        access_role=role,
        remote_address=data["remote_address"],
        remote_port=data["remote_port"],
    )
    r = data["reservation"]
    reservation = (
        None
        if r is None
        else AgwAddresses(
            str(r["access_address"]),
            int(r["access_port"]),
            str(r["core_address"]),
            int(r["core_port"]),
            Fingerprint.parse(r["fingerprint"]),
        )
    )
    return StreamState(plan, reservation)
