"""The UE simulator's SIP user agent and SDP, sans I/O.

Builds what a UE sends on the Gm interface and reads what it gets back, on top of the project's
SIP message model (:mod:`pcscf.sip`) and lossless SDP (:mod:`pcscf.sdp`):

- ``REGISTER`` with ``Security-Client: msrp-tls;mediasec, bfcp-tls;mediasec`` (TS 24.229
  section 7.2A.7); the knob ``mechanisms=()`` registers none, to request e2ae without having
  registered it.
- An SDP offer or answer with an MSRP and a BFCP stream over TLS, each with the UE's own
  ``a=fingerprint`` and ``a=3ge2ae:requested`` (:func:`build_sdp`, :class:`MediaPlan`).
- ``INVITE`` / ``ACK`` / ``BYE`` as the caller, ``200`` to an ``INVITE`` / ``BYE`` as the callee,
  with a small dialog state (:class:`Dialog`: tags, route set, remote target, CSeq).
- :func:`streams_of`: what the UE needs from the SDP it received to open its media: address,
  port, TCP/TLS role (``a=setup``), the peer's fingerprints, MSRP path, BFCP ids.
- KMS-keyed calls (TS 33.328 Annex H): :class:`KmsAccess` (how a UE reaches its KMS), an offer
  or answer carrying a MIKEY message in a session-level ``a=key-mgmt:mikey`` instead of
  fingerprints (``MediaPlan(key_mgmt=...)``), :func:`transfer_message` (the one MIKEY message a
  received SDP keys its TLS streams with), :func:`crypto_sessions` (the CS ID of each TLS
  m-line) and :func:`ticket_keys` (the MPK and the TGKs of a KMS reply).

The Twisted edge sends these over UDP/TCP and opens the media with :mod:`lab.media`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import attrs

from certs.fingerprint import Fingerprint
from e2ae.tcpmedia import Setup
from mikey.constants import ErrorNo
from mikey.errors import MikeyError
from mikey.message import Message, decode
from pcscf.sdp import KeyMgmt, SessionDescription
from pcscf.sip import NameAddr, Request, Response, make_response

Role = Literal["active", "passive"]

MEDIA_MECHANISMS: tuple[str, ...] = ("msrp-tls", "bfcp-tls")
TLS_PROTOS = {"message": "TCP/TLS/MSRP", "application": "TCP/TLS/BFCP"}
PLAIN_PROTOS = {"message": "TCP/MSRP", "application": "TCP/BFCP"}


class UeError(Exception):
    """Root of the UE simulator's errors."""


class RemoteUeError(UeError):
    """Something received (a response, an SDP) is not what a UE can use."""

    def __init__(self, reason: str, *, where: str, value: object = None) -> None:
        super().__init__(f"{where}: {reason}" + ("" if value is None else f" ({value!r})"))
        self.reason = reason
        self.where = where
        self.value = value


class LocalUeError(UeError):
    """A request the UE was asked to build cannot be built (bad configuration, no dialog)."""


def new_token() -> str:
    return secrets.token_hex(6)


# ---------------------------------------------------------------------------------------------
# SDP


@attrs.frozen
class MediaPlan:
    """What the UE offers or answers: its address, ports, certificate fingerprint, roles."""

    ip: str
    fingerprint: Fingerprint
    msrp_port: int
    msrp_session: str = "s1"
    bfcp_port: int | None = None
    setup: Setup = "active"
    bfcp_setup: Setup | None = None
    #: ``a=3ge2ae:requested`` on both streams (False: a plain TLS stream without the request).
    e2ae: bool = True
    tls: bool = True
    conference_id: int = 1
    user_id: int = 1
    floor_id: int = 1
    floorctrl: str = "c-only"
    accept_types: str = "message/cpim text/plain"
    #: A session-level ``a=key-mgmt`` value (RFC 4567, ``mikey <base64>``): the TLS streams are
    #: keyed by it (TS 33.328 Annex H) and carry neither ``a=fingerprint`` nor ``a=3ge2ae``.
    key_mgmt: str | None = None

    @property
    def msrp_uri(self) -> str:
        scheme = "msrps" if self.tls else "msrp"
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{scheme}://{host}:{self.msrp_port}/{self.msrp_session};tcp"


def build_sdp(plan: MediaPlan, *, username: str = "ue", version: int = 1) -> bytes:
    """The UE's SDP: one MSRP stream and, if ``bfcp_port`` is set, one BFCP stream."""
    family = "IP6" if ":" in plan.ip else "IP4"
    protos = TLS_PROTOS if plan.tls else PLAIN_PROTOS
    lines = [
        "v=0",
        f"o={username} {version} {version} IN {family} {plan.ip}",
        "s=-",
        f"c=IN {family} {plan.ip}",
        "t=0 0",
    ]
    keyed = plan.tls and plan.key_mgmt is not None
    if keyed:
        lines.append(f"a=key-mgmt:{plan.key_mgmt}")
    lines += [
        f"m=message {plan.msrp_port} {protos['message']} *",
        f"a=accept-types:{plan.accept_types}",
        f"a=path:{plan.msrp_uri}",
        f"a=setup:{plan.setup}",
    ]
    security = [plan.fingerprint.attribute()] if plan.tls and not keyed else []
    if plan.tls and plan.e2ae and not keyed:
        security.append("a=3ge2ae:requested")
    lines += [*security, "a=msrp-cema"]
    if plan.bfcp_port is not None:
        lines += [
            f"m=application {plan.bfcp_port} {protos['application']} *",
            f"a=floorctrl:{plan.floorctrl}",
            f"a=confid:{plan.conference_id}",
            f"a=userid:{plan.user_id}",
            f"a=floorid:{plan.floor_id} mstrm:1",
            f"a=setup:{plan.bfcp_setup or plan.setup}",
            "a=connection:new",
            *security,
        ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def answer_setup(offered: str) -> Role:
    """The answerer's TCP role for an offered ``a=setup`` (RFC 4145): a UE prefers active."""
    return "active" if offered in ("passive", "actpass") else "passive"


@attrs.frozen
class StreamInfo:
    """One MSRP or BFCP stream of a received SDP, as the UE needs it to open its media."""

    index: int
    media: str
    proto: str
    host: str | None
    port: int
    #: The peer's ``a=setup`` (RFC 4145 / 4975 default when absent: the offerer is active).
    setup: str
    fingerprints: tuple[Fingerprint, ...]
    e2ae: str | None
    path: tuple[str, ...] = ()
    conference_id: int | None = None
    user_id: int | None = None
    floor_ids: tuple[int, ...] = ()
    #: The stream has an effective ``a=key-mgmt`` (its own or the session's, RFC 4567).
    key_mgmt: bool = False

    @property
    def tls(self) -> bool:
        return self.proto.upper().startswith("TCP/TLS/")

    @property
    def our_role(self) -> Role:
        """Our TCP (and TLS) role: the opposite of the peer's (``actpass``: we take active)."""
        return "passive" if self.setup == "active" else "active"


def streams_of(sdp: bytes, *, from_offerer: bool) -> list[StreamInfo]:
    """The MSRP and BFCP streams of ``sdp`` (other media are skipped)."""
    try:
        parsed = SessionDescription.parse(sdp)
    except ValueError as exc:
        raise RemoteUeError(str(exc), where="SDP") from None
    out: list[StreamInfo] = []
    for index, media in enumerate(parsed.media):
        proto = media.proto.upper()
        if not (proto.endswith("/MSRP") or proto.endswith("/BFCP")):
            continue
        conn = parsed.effective_connection(index)
        setups = media.attribute_values("setup")
        setup = setups[0].strip().lower() if setups else ("active" if from_offerer else "passive")
        e2ae = media.attribute_values("3ge2ae")
        info = StreamInfo(
            index,
            media.media,
            media.proto,
            None if conn is None else conn.host,
            media.port,
            setup,
            tuple(parsed.effective_fingerprints(index)),
            e2ae[0].strip() if e2ae else None,
            tuple(" ".join(media.attribute_values("path")).split()),
            _int_attr(media.attribute_values("confid"), "confid"),
            _int_attr(media.attribute_values("userid"), "userid"),
            tuple(
                _int_value(v.split()[0], "floorid")
                for v in media.attribute_values("floorid")
                if v.split()
            ),
            bool(parsed.effective_attribute_values(index, "key-mgmt")),
        )
        out.append(info)
    return out


def _int_value(text: str, where: str) -> int:
    if not text.isdigit():
        raise RemoteUeError("expected a number", where=f"a={where}", value=text)
    return int(text)


def _int_attr(values: list[str], where: str) -> int | None:
    return _int_value(values[0].strip(), where) if values else None


# ---------------------------------------------------------------------------------------------
# SIP


@attrs.define
class Dialog:
    """An INVITE dialog seen from the UE (RFC 3261 section 12)."""

    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    remote_tag: str | None = None
    route_set: tuple[str, ...] = ()
    local_cseq: int = 1
    invite_cseq: int = 1
    state: Literal["early", "confirmed", "terminated"] = "early"
    #: The remote SDP (the answer for a caller, the offer for a callee).
    remote_sdp: bytes = b""


@attrs.define
class UserAgent:
    """A UE's SIP user agent behind a P-CSCF (``proxy``: its Gm address, host and port)."""

    aor: str
    contact_host: str
    contact_port: int
    proxy: tuple[str, int]
    transport: Literal["udp", "tcp"] = "udp"
    #: Media mechanisms registered with ``;mediasec``; ``()`` for the misbehaving UE that asks
    #: for e2ae in its SDP without having registered it.
    mechanisms: tuple[str, ...] = MEDIA_MECHANISMS
    new_id: Callable[[], str] = new_token
    register_cseq: int = 0
    register_call_id: str = ""
    dialogs: dict[str, Dialog] = attrs.Factory(dict)
    #: Security-Server mechanisms the network advertised in the last REGISTER response.
    network_mechanisms: frozenset[str] = frozenset()

    @property
    def contact(self) -> str:
        user = self.aor.split(":", 1)[1].split("@", 1)[0]
        host = f"[{self.contact_host}]" if ":" in self.contact_host else self.contact_host
        return f"<sip:{user}@{host}:{self.contact_port};transport={self.transport}>"

    @property
    def domain(self) -> str:
        return self.aor.split("@", 1)[1] if "@" in self.aor else self.aor.split(":", 1)[1]

    def _via(self) -> str:
        host = f"[{self.contact_host}]" if ":" in self.contact_host else self.contact_host
        branch = "z9hG4bK" + self.new_id()
        return f"SIP/2.0/{self.transport.upper()} {host}:{self.contact_port};branch={branch};rport"

    def _proxy_route(self) -> str:
        host, port = self.proxy
        host = f"[{host}]" if ":" in host else host
        return f"<sip:{host}:{port};lr>"

    # -- registration -------------------------------------------------------------------------

    def register(self, *, expires: int = 600) -> Request:
        """A REGISTER for the AOR; ``expires=0`` unregisters."""
        if not self.register_call_id:
            self.register_call_id = "reg-" + self.new_id()
        self.register_cseq += 1
        headers: list[tuple[str, str]] = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self.new_id()}"),
            ("To", f"<{self.aor}>"),
            ("Call-ID", self.register_call_id),
            ("CSeq", f"{self.register_cseq} REGISTER"),
            ("Contact", self.contact),
            ("Expires", str(expires)),
            ("Supported", "path"),
        ]
        if self.mechanisms:
            headers.append(("Security-Client", ", ".join(f"{m};mediasec" for m in self.mechanisms)))
        return Request(tuple(headers), b"", "REGISTER", f"sip:{self.domain}")

    def registered(self, response: Response) -> bool:
        """Read a REGISTER response: True on 2xx; records the advertised Security-Server."""
        if not 200 <= response.status < 300:
            return False
        names: set[str] = set()
        for value in response.values("security-server"):
            name, _, params = value.strip().partition(";")
            if "mediasec" in params.lower():
                names.add(name.strip().lower())
        self.network_mechanisms = frozenset(names)
        return True

    # -- as the caller ------------------------------------------------------------------------

    def invite(self, target: str, sdp: bytes) -> tuple[Request, Dialog]:
        """An initial INVITE to ``target`` (a SIP URI) with ``sdp``, routed via the P-CSCF."""
        dialog = Dialog(
            call_id=self.new_id() + "@" + self.contact_host,
            local_tag=self.new_id(),
            local_uri=self.aor,
            remote_uri=target,
            remote_target=target,
        )
        self.dialogs[dialog.call_id] = dialog
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={dialog.local_tag}"),
            ("To", f"<{target}>"),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{dialog.local_cseq} INVITE"),
            ("Contact", self.contact),
            ("Route", self._proxy_route()),
            ("Content-Type", "application/sdp"),
        ]
        return Request(tuple(headers), sdp, "INVITE", target), dialog

    def message(self, target: str, body: bytes, content_type: str) -> Request:
        """An out-of-dialog MESSAGE (RFC 3428) to ``target``, routed via the P-CSCF."""
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self.new_id()}"),
            ("To", f"<{target}>"),
            ("Call-ID", self.new_id() + "@" + self.contact_host),
            ("CSeq", "1 MESSAGE"),
            ("Route", self._proxy_route()),
            ("Content-Type", content_type),
        ]
        return Request(tuple(headers), body, "MESSAGE", target)

    def invite_answered(self, response: Response) -> Dialog:
        """Read a final 2xx to our INVITE: the dialog is confirmed (send :meth:`ack`)."""
        dialog = self._dialog_of(response)
        if not 200 <= response.status < 300:
            dialog.state = "terminated"
            return dialog
        tag = response.to.tag
        if tag is None:
            raise RemoteUeError("2xx without a To tag", where="To", value=response.get("to"))
        dialog.remote_tag = tag
        routes = [str(r) for r in response.addresses("record-route")]
        dialog.route_set = tuple(reversed(routes))
        contacts = response.addresses("contact")
        if contacts:
            dialog.remote_target = str(contacts[0].uri)
        dialog.remote_sdp = response.body
        dialog.state = "confirmed"
        return dialog

    def ack(self, dialog: Dialog) -> Request:
        """The ACK for the 2xx of the INVITE (same CSeq number, RFC 3261 section 13.2.2.4)."""
        return self._in_dialog(dialog, "ACK", cseq=dialog.invite_cseq)

    def bye(self, dialog: Dialog) -> Request:
        dialog.local_cseq += 1
        request = self._in_dialog(dialog, "BYE", cseq=dialog.local_cseq)
        dialog.state = "terminated"
        return request

    def _in_dialog(self, dialog: Dialog, method: str, *, cseq: int) -> Request:
        if dialog.remote_tag is None:
            raise LocalUeError(f"no confirmed dialog for {method} (call {dialog.call_id})")
        headers: list[tuple[str, str]] = [("Via", self._via()), ("Max-Forwards", "70")]
        headers += [("Route", r) for r in dialog.route_set]
        headers += [
            ("From", f"<{dialog.local_uri}>;tag={dialog.local_tag}"),
            ("To", f"<{dialog.remote_uri}>;tag={dialog.remote_tag}"),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        return Request(tuple(headers), b"", method, dialog.remote_target)

    def _dialog_of(self, message: Request | Response) -> Dialog:
        dialog = self.dialogs.get(message.call_id)
        if dialog is None:
            raise RemoteUeError("no such call", where="Call-ID", value=message.call_id)
        return dialog

    # -- as the callee ------------------------------------------------------------------------

    def answer(
        self, invite: Request, sdp: bytes, *, status: int = 200, warning: str | None = None
    ) -> tuple[Response, Dialog]:
        """Answer an incoming INVITE (2xx with ``sdp`` and our Contact; or an error status,
        with ``warning`` as ``Warning: 399 <our host> "<warning>"``, RFC 3261 section 20.43)."""
        tag = self.new_id()
        from_ = invite.from_
        if from_.tag is None:
            raise RemoteUeError("INVITE without a From tag", where="From", value=invite.get("from"))
        contacts = invite.addresses("contact")
        dialog = Dialog(
            call_id=invite.call_id,
            local_tag=tag,
            local_uri=str(invite.to.uri),
            remote_uri=str(from_.uri),
            remote_target=str(contacts[0].uri) if contacts else str(from_.uri),
            remote_tag=from_.tag,
            route_set=tuple(str(r) for r in invite.addresses("record-route")),
            local_cseq=0,
            state="confirmed" if 200 <= status < 300 else "terminated",
            remote_sdp=invite.body,
        )
        self.dialogs[dialog.call_id] = dialog
        extra: list[tuple[str, str]] = [("Contact", self.contact)]
        if warning is not None and status >= 300:
            safe = warning.replace("\\", "").replace('"', "'").replace("\r", " ").replace("\n", " ")
            host = f"[{self.contact_host}]" if ":" in self.contact_host else self.contact_host
            extra.append(("Warning", f'399 {host} "{safe}"'))
        body = b""
        if 200 <= status < 300:
            extra.append(("Content-Type", "application/sdp"))
            body = sdp
        return make_response(invite, status, to_tag=tag, extra=extra, body=body), dialog

    def respond(self, request: Request, status: int = 200) -> Response:
        """Answer an in-dialog request (BYE: the dialog ends)."""
        dialog = self.dialogs.get(request.call_id)
        if request.method == "BYE" and dialog is not None:
            dialog.state = "terminated"
        to_tag = None if dialog is None else dialog.local_tag
        return make_response(request, status if dialog is not None else 481, to_tag=to_tag)


def uri_of(name_addr: str) -> str:
    """The URI inside a name-addr (``"Bob" <sip:bob@x>;tag=1`` -> ``sip:bob@x``)."""
    return str(NameAddr.parse(name_addr).uri)


@attrs.frozen
class MediaAction:
    """How the UE opens one stream after the offer/answer: connect or listen, and what to pin."""

    media: str
    #: ``connect`` (our a=setup active) to ``host:port``, or ``listen`` on our own port.
    action: Literal["connect", "listen"]
    host: str | None
    port: int
    tls: bool
    #: The peer's fingerprints from the SDP we received: the AGW's when e2ae was applied.
    pinned: tuple[Fingerprint, ...]
    e2ae_applied: bool
    remote_path: tuple[str, ...] = ()
    conference_id: int | None = None
    user_id: int | None = None
    floor_ids: tuple[int, ...] = ()
    #: The crypto session (CS ID) whose TLS-PSK keys the stream, when ``keyed`` (Annex H).
    cs_id: int | None = None


def media_actions(
    received: bytes, *, from_offerer: bool, own: MediaPlan | None = None, keyed: bool = False
) -> list[MediaAction]:
    """What to do for each MSRP/BFCP stream of the SDP the UE received (an answer to our offer,
    ``from_offerer=False``, or an offer we answer, ``True``). A stream with port 0 is skipped.

    A TLS stream without any usable fingerprint is refused (:class:`RemoteUeError`): the UE
    could not verify the peer. ``own`` gives our listening ports for the ``listen`` case.
    With ``keyed`` (a KMS call), a TLS stream with ``a=key-mgmt`` needs no fingerprint: its
    TLS-PSK proves the peer, and the action names its crypto session (``cs_id``)."""
    actions: list[MediaAction] = []
    streams = streams_of(received, from_offerer=from_offerer)
    sessions = crypto_sessions(streams)
    for stream in streams:
        if stream.port == 0:
            continue
        cs_id = sessions.get(stream.index) if keyed and stream.key_mgmt else None
        if stream.tls and not stream.fingerprints and cs_id is None:
            raise RemoteUeError(
                "TLS stream without a usable a=fingerprint",
                where=f"m={stream.media}",
                value=stream.proto,
            )
        role = stream.our_role
        port = stream.port
        if role == "passive":
            if own is None:
                raise LocalUeError("listening needs our own media plan (ports)")
            ours = own.msrp_port if stream.media == "message" else own.bfcp_port
            if ours is None:
                raise LocalUeError(f"no local port for m={stream.media}")
            port = ours
        actions.append(
            MediaAction(
                stream.media,
                "connect" if role == "active" else "listen",
                stream.host if role == "active" else None,
                port,
                stream.tls,
                stream.fingerprints,
                stream.e2ae == "applied",
                stream.path,
                stream.conference_id,
                stream.user_id,
                stream.floor_ids,
                cs_id,
            )
        )
    return actions


# ---------------------------------------------------------------------------------------------
# KMS-keyed calls (TS 33.328 Annex H, TR 33.829 section 8.3.1.2)

#: The KMS's identity (IDRkms) unless told otherwise (docs/kms.md).
KMS_IDENTITY = "kms.e2ae.lab"


@attrs.frozen
class KmsAccess:
    """How a UE reaches its KMS: ``address`` (host, port), ``pin`` (the fingerprint of the
    KMS's certificate), ``key`` (the key the UE shares with the KMS; left out of ``repr``).

    ``identity``: the UE's identity at the KMS (IDRi / IDRr; None: its AOR). ``cert_files``:
    the client certificate and key (PEM files) of the HTTPS connection; None: the UE's own
    certificate. ``responder``: misbehaviour for negative tests, every ticket and TRANSFER_INIT
    names this Responder instead of the called AOR.

    ``app_servers``: the identities of the application servers (an MSRP AS) this UE lets
    resolve its tickets; they are added to every ticket's Responders (TR 33.829 §8.3.1.2: an
    AS in the MSRP path must resolve the ticket). ``as_policy``: what the UE does when it learns
    that TLS is terminated in an AS (the TRANSFER_RESP comes from an AS, or the ticket of an
    incoming offer was issued to someone else than the caller): ``accept`` carries on and
    records it, ``close`` ends the call (caller: BYE; callee: 488)."""

    address: tuple[str, int]
    pin: Fingerprint
    key: bytes = attrs.field(repr=False)
    identity: str | None = None
    cert_files: tuple[Path, Path] | None = None
    kms_identity: str = KMS_IDENTITY
    timeout: float = 10.0
    responder: str | None = None
    app_servers: tuple[str, ...] = ()
    as_policy: Literal["accept", "close"] = "accept"


def crypto_sessions(streams: Sequence[StreamInfo]) -> dict[int, int]:
    """The CS ID of each ``TCP/TLS/MSRP`` and ``TCP/TLS/BFCP`` m-line (stream index -> CS ID):
    1, 2, ... in m-line order, as the TRANSFER_INIT's map lists them (Annex H.1)."""
    tls = [s.index for s in streams if s.tls]
    return {index: n for n, index in enumerate(tls, start=1)}


def key_mgmt_value(message: Message) -> str:
    """The ``a=key-mgmt`` value carrying ``message`` (RFC 4567: ``mikey <base64>``)."""
    return KeyMgmt("mikey", message.encode()).value()


def transfer_message(sdp: bytes) -> Message:
    """The MIKEY message of the effective ``a=key-mgmt:mikey`` of the TLS streams of ``sdp``:
    one message for all of them. Raises MikeyError (Unspecified) when there is none, when the
    streams are keyed by different ones, or when the data is not base64; the codec's error for
    a message it cannot decode."""
    try:
        data = SessionDescription.parse(sdp).tls_key_mgmt("mikey")
    except ValueError as exc:
        raise MikeyError(ErrorNo.UNSPECIFIED, f"SDP: {exc}") from None
    return decode(data)
