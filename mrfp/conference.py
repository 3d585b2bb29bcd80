"""One conference of the MRFP, sans I/O: an MSRP chat room and a BFCP floor control server.

A :class:`Conference` is what one Mp context holds: the participants' streams (one per
termination), each an MSRP session or a BFCP connection of which the MRFP is the far end.
Bytes in (``receive(termination, data, now)``), bytes out (:class:`Send`: the termination to
write to and the bytes), plus :class:`Note` records for the log. No I/O, no clock: ``now`` is
given by the caller.

MSRP (RFC 4975). The MRFP is the MSRP endpoint of each participant's session (its a=path URI
is the From-Path of what it sends and the To-Path of what the participant sends), so:

- Each received SEND chunk is answered by the MRFP itself (:class:`e2ae.msrp.MsrpSession`):
  ``200`` unless ``Failure-Report: no`` (section 7.2: a transaction response is sent when
  the sender asks for one); ``413`` for a message above ``max_message_bytes``; ``481`` when
  the To-Path is not this session. Chunks are reassembled (section 5.1) within bounds.
- A whole message is sent on to every other participant whose stream is up, as a new SEND
  of the MRFP's session with that participant: its To-Path/From-Path, a fresh transaction id
  and Message-ID per recipient, the same Content-Type (``message/cpim``, ``text/plain``...)
  and content, in chunks of ``chunk_size``.
- ``Success-Report: yes`` from a sender is answered by the MRFP's REPORT (200) once the
  whole message reached the MRFP: the MRFP is the endpoint of that hop (section 7.1.1). The
  MRFP's own SENDs to the recipients carry ``Failure-Report: yes`` (the default) and no
  Success-Report; a recipient's error response or error REPORT is logged (a
  :class:`Note` ``delivery-failed``) and goes no further: the sender's transaction was
  already answered, and RFC 4975 has no report of another session's delivery.
- An empty SEND (section 5.4: the active end binds the connection) is answered and not
  forwarded; when the MRFP is the active end it sends one itself (:meth:`Conference.up`).

BFCP (RFC 8855). The MRFP is the floor control server of the conference's floors:

- ``Hello`` -> ``HelloAck``; ``Goodbye`` -> ``GoodbyeAck`` (the user's requests go).
- ``FloorRequest`` -> ``FloorRequestStatus``: ``Granted`` when each of its floors is free
  and no earlier queued request waits for one of them, else ``Pending`` with its queue
  position; one holder at a time per floor.
- ``FloorRelease`` -> ``FloorRequestStatus`` ``Released`` (``Cancelled`` for a request still
  queued); the first queued request whose floors are then free is granted with a
  FloorRequestStatus to its user (a server-initiated transaction: transaction id 0 over a
  reliable transport, RFC 8855 section 8).
- A message whose User ID is no participant of the conference -> ``Error`` 2 (User Does
  Not Exist, RFC 8855 section 5.2.6); a participant's id sent on another participant's
  stream -> ``Error`` 5 (Unauthorized Operation); an unknown floor -> 6; an unknown floor
  request -> 7; a full queue or too many requests of one user -> 8; another conference id
  -> 1. Each is logged (a :class:`Note`).

Bounds (:class:`Limits`): participants per conference, queue length, requests per user,
bytes per MSRP message, MSRP chunk and BFCP message, messages being reassembled per stream and their
age. A stream that breaks them, or sends what cannot be resynchronised, is failed
(:class:`StreamFailed`): the caller closes that termination; the conference goes on.
"""

from __future__ import annotations

from typing import Literal

import attrs

from e2ae import bfcp, msrp
from e2ae.bfcp import AttrType, ErrorCodeValue, Primitive, RequestStatusValue

Media = Literal["msrp", "bfcp"]

#: BFCP: transaction id of a message the floor control server initiates (RFC 8855 section 8).
SERVER_TRANSACTION = 0


@attrs.frozen
class Limits:
    """What one conference holds at most."""

    max_participants: int = 32
    max_queue: int = 16
    max_requests_per_user: int = 4
    max_message_bytes: int = 1 << 20
    max_chunk_bytes: int = 1 << 20
    max_bfcp_bytes: int = 65536
    max_partial_messages: int = 8
    reassembly_timeout: float = 60.0
    chunk_size: int = msrp.DEFAULT_CHUNK_SIZE


@attrs.frozen
class Send:
    """Bytes to write on a termination's connection."""

    termination: str
    data: bytes


@attrs.frozen
class Note:
    """Something to log: ``kind`` (``message``, ``delivery-failed``, ``bfcp-error``, ``floor``,
    ``peer-error``, ``aborted``), the termination concerned and a text."""

    kind: str
    termination: str
    text: str


@attrs.frozen
class Output:
    sends: tuple[Send, ...] = ()
    notes: tuple[Note, ...] = ()


class ConferenceError(Exception):
    """A request the conference cannot take (a full conference, an unknown termination, ...)."""


class StreamFailed(ConferenceError):
    """A stream sent what cannot be resynchronised or broke a bound: close its termination."""

    def __init__(self, termination: str, reason: str, output: Output = Output()) -> None:
        super().__init__(f"{termination}: {reason}")
        self.termination = termination
        self.reason = reason
        #: What to send before closing (e.g. an error response).
        self.output = output


@attrs.define(eq=False)
class _Member:
    termination: str
    participant: str
    media: Media
    session: msrp.MsrpSession | None = None
    user_id: int | None = None
    framer: bfcp.BfcpFramer | None = None
    active: bool = False
    is_up: bool = False
    messages_in: int = 0
    messages_out: int = 0
    partial_since: dict[str, float] = attrs.Factory(dict)


@attrs.define(eq=False)
class _FloorRequest:
    request_id: int
    user_id: int
    termination: str
    floor_ids: tuple[int, ...]
    granted: bool = False


@attrs.define(eq=False)
class Conference:
    """One conference (see the module's docstring). ``bfcp_conference_id``: the BFCP
    Conference ID; ``None`` takes the one of the first BFCP message received."""

    uri: str
    floors: frozenset[int] = frozenset()
    bfcp_conference_id: int | None = None
    limits: Limits = Limits()
    members: dict[str, _Member] = attrs.Factory(dict)
    requests: dict[int, _FloorRequest] = attrs.Factory(dict)
    #: Floor request ids in arrival order (granted and queued).
    order: list[int] = attrs.Factory(list)
    _next_request: int = 1

    # -- membership ---------------------------------------------------------------------------

    def _check_room(self, termination: str) -> None:
        if termination in self.members:
            raise ConferenceError(f"termination {termination} is already in the conference")
        if len(self.members) >= self.limits.max_participants:
            raise ConferenceError(
                f"the conference holds {self.limits.max_participants} streams already"
            )

    def add_msrp(
        self,
        termination: str,
        participant: str,
        local_uri: str,
        remote_path: tuple[str, ...],
        *,
        active: bool = False,
    ) -> None:
        """An MSRP stream whose MRFP end is ``local_uri``; ``remote_path`` the participant's
        a=path (learnt from its first request when empty). ``active``: the MRFP opens the
        connection, so it sends the binding SEND (section 5.4) once the stream is up."""
        self._check_room(termination)
        session = msrp.MsrpSession(
            local_uri,
            remote_path,
            chunk_size=self.limits.chunk_size,
            max_message_bytes=self.limits.max_message_bytes,
            parser=msrp.MsrpParser(max_body_bytes=self.limits.max_chunk_bytes),
        )
        self.members[termination] = _Member(
            termination, participant, "msrp", session=session, active=active
        )

    def add_bfcp(self, termination: str, participant: str, user_id: int) -> None:
        """A BFCP stream of the user ``user_id`` (its RFC 8855 User ID)."""
        self._check_room(termination)
        if not 1 <= user_id <= 0xFFFF:
            raise ConferenceError(f"BFCP user id {user_id} is not 1..65535")
        for m in self.members.values():
            if m.user_id == user_id:
                raise ConferenceError(f"BFCP user id {user_id} is {m.participant}'s already")
        self.members[termination] = _Member(
            termination, participant, "bfcp", user_id=user_id, framer=bfcp.BfcpFramer()
        )

    def participant_of(self, termination: str) -> str:
        return self._member(termination).participant

    def _member(self, termination: str) -> _Member:
        member = self.members.get(termination)
        if member is None:
            raise ConferenceError(f"no termination {termination} in the conference")
        return member

    def up(self, termination: str) -> Output:
        """The termination's connection is ready (its TLS handshake completed, or TCP for a
        plain stream): it receives from now on."""
        member = self._member(termination)
        member.is_up = True
        session = member.session
        if session is not None and member.active and session.remote_path:
            session.send_message(b"")
            return Output((Send(termination, session.data_to_send()),))
        return Output()

    def remove(self, termination: str) -> Output:
        """The termination leaves: its floor requests go (freed floors pass on)."""
        member = self.members.pop(termination, None)
        if member is None or member.user_id is None:
            return Output()
        return self._drop_user(member.user_id)

    def statistics(self, termination: str) -> tuple[int, int]:
        """(messages received, messages sent) of a termination."""
        member = self._member(termination)
        return member.messages_in, member.messages_out

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, termination: str, data: bytes, now: float) -> Output:
        """Bytes from a termination's connection. Raises :class:`StreamFailed` when the stream
        must be closed (the others carry on)."""
        member = self._member(termination)
        if member.session is not None:
            return self._receive_msrp(member, data, now)
        return self._receive_bfcp(member, data)

    def expire(self, now: float) -> Output:
        """Drop messages whose reassembly began more than ``reassembly_timeout`` ago."""
        notes: list[Note] = []
        for member in self.members.values():
            if member.session is None:
                continue
            incoming = member.session._incoming
            for mid, since in list(member.partial_since.items()):
                if now - since > self.limits.reassembly_timeout:
                    incoming.pop(mid, None)
                    del member.partial_since[mid]
                    notes.append(
                        Note("aborted", member.termination, f"message {mid}: reassembly timed out")
                    )
        return Output((), tuple(notes))

    # -- MSRP ---------------------------------------------------------------------------------

    def _receive_msrp(self, member: _Member, data: bytes, now: float) -> Output:
        session = member.session
        assert session is not None
        try:
            events = session.receive_data(data)
        except msrp.RemoteMsrpError as exc:
            reply = session.data_to_send()
            out = Output((Send(member.termination, reply),) if reply else ())
            raise StreamFailed(member.termination, str(exc), out) from None
        sends: list[Send] = []
        notes: list[Note] = []
        reply = session.data_to_send()
        if reply:
            sends.append(Send(member.termination, reply))
        incoming = session._incoming
        for mid in list(member.partial_since):
            if mid not in incoming:
                del member.partial_since[mid]
        for mid in incoming:
            member.partial_since.setdefault(mid, now)
        if len(incoming) > self.limits.max_partial_messages:
            raise StreamFailed(
                member.termination,
                f"more than {self.limits.max_partial_messages} messages being reassembled",
                Output(tuple(sends), tuple(notes)),
            )
        for event in events:
            if isinstance(event, msrp.MessageReceived):
                member.messages_in += 1
                fanned = self._fan_out(member, event)
                sends.extend(fanned)
                notes.append(
                    Note(
                        "message",
                        member.termination,
                        f"{len(event.body)} bytes of {event.content_type} from"
                        f" {member.participant} to {len(fanned)} participants",
                    )
                )
            elif isinstance(event, msrp.MessageFailed):
                notes.append(
                    Note(
                        "delivery-failed",
                        member.termination,
                        f"message {event.message_id} to {member.participant}:"
                        f" {event.status} {event.comment or ''}".rstrip(),
                    )
                )
            elif isinstance(event, msrp.MessageAborted):
                notes.append(
                    Note(
                        "aborted", member.termination, f"message {event.message_id}: {event.reason}"
                    )
                )
            elif isinstance(event, msrp.PeerError):
                notes.append(Note("peer-error", member.termination, str(event.error)))
        return Output(tuple(sends), tuple(notes))

    def _fan_out(self, sender: _Member, event: msrp.MessageReceived) -> list[Send]:
        sends: list[Send] = []
        for other in self.members.values():
            session = other.session
            if other is sender or session is None or not other.is_up or not session.remote_path:
                continue
            session.send_message(event.body, event.content_type)
            other.messages_out += 1
            sends.append(Send(other.termination, session.data_to_send()))
        return sends

    # -- BFCP ---------------------------------------------------------------------------------

    def _receive_bfcp(self, member: _Member, data: bytes) -> Output:
        framer = member.framer
        assert framer is not None
        framer.feed(data)
        sends: list[Send] = []
        notes: list[Note] = []
        while True:
            try:
                message = framer.next_message()
            except bfcp.RemoteBfcpError as exc:
                answer = exc.error_message()
                if answer is not None:
                    sends.append(Send(member.termination, answer.to_bytes()))
                notes.append(Note("bfcp-error", member.termination, str(exc)))
                if exc.recoverable:
                    continue
                raise StreamFailed(
                    member.termination, str(exc), Output(tuple(sends), tuple(notes))
                ) from None
            if message is None:
                break
            member.messages_in += 1
            out = self._on_bfcp(member, message)
            sends.extend(out.sends)
            notes.extend(out.notes)
        if framer.buffered > self.limits.max_bfcp_bytes:
            raise StreamFailed(
                member.termination,
                f"a BFCP message above {self.limits.max_bfcp_bytes} bytes",
                Output(tuple(sends), tuple(notes)),
            )
        for send in sends:
            self.members[send.termination].messages_out += 1
        return Output(tuple(sends), tuple(notes))

    def _error(self, member: _Member, msg: bfcp.Message, code: ErrorCodeValue, text: str) -> Output:
        error = bfcp.error_message(msg.conference_id, msg.transaction_id, msg.user_id, code, text)
        return Output(
            (Send(member.termination, error.to_bytes()),),
            (Note("bfcp-error", member.termination, f"{code.name} ({int(code)}): {text}"),),
        )

    def _on_bfcp(self, member: _Member, msg: bfcp.Message) -> Output:
        if msg.primitive in (
            Primitive.HELLO_ACK,
            Primitive.GOODBYE_ACK,
            Primitive.ERROR,
            Primitive.FLOOR_REQUEST_STATUS_ACK,
            Primitive.FLOOR_STATUS_ACK,
        ):
            return Output()
        if self.bfcp_conference_id is None:
            self.bfcp_conference_id = msg.conference_id
        if msg.conference_id != self.bfcp_conference_id:
            return self._error(
                member,
                msg,
                ErrorCodeValue.CONFERENCE_DOES_NOT_EXIST,
                f"conference {msg.conference_id} does not exist",
            )
        if msg.user_id != member.user_id:
            known = any(m.user_id == msg.user_id for m in self.members.values())
            if known:
                return self._error(
                    member,
                    msg,
                    ErrorCodeValue.UNAUTHORIZED_OPERATION,
                    f"user {msg.user_id} is another participant",
                )
            return self._error(
                member,
                msg,
                ErrorCodeValue.USER_DOES_NOT_EXIST,
                f"user {msg.user_id} is not a participant of this conference",
            )
        header = (msg.conference_id, msg.transaction_id, msg.user_id)
        if msg.primitive == Primitive.HELLO:
            ack = bfcp.Message(
                Primitive.HELLO_ACK,
                *header,
                (
                    bfcp.SupportedPrimitives(SERVER_PRIMITIVES),
                    bfcp.SupportedAttributes(bfcp.SUPPORTED_ATTRIBUTE_TYPES),
                ),
            )
            return Output((Send(member.termination, ack.to_bytes()),))
        if msg.primitive == Primitive.GOODBYE:
            ack = bfcp.Message(Primitive.GOODBYE_ACK, *header)
            rest = self._drop_user(msg.user_id)
            return Output((Send(member.termination, ack.to_bytes()), *rest.sends), rest.notes)
        if msg.primitive == Primitive.FLOOR_REQUEST:
            return self._floor_request(member, msg)
        if msg.primitive == Primitive.FLOOR_RELEASE:
            return self._floor_release(member, msg)
        return self._error(
            member, msg, ErrorCodeValue.UNKNOWN_PRIMITIVE, f"{msg.primitive.name} not supported"
        )

    def _status(
        self, req: _FloorRequest, transaction_id: int, status: RequestStatusValue, position: int = 0
    ) -> bytes:
        assert self.bfcp_conference_id is not None
        return bfcp.floor_request_status(
            self.bfcp_conference_id,
            transaction_id,
            req.user_id,
            req.request_id,
            status,
            req.floor_ids,
            queue_position=position,
        ).to_bytes()

    def _held(self) -> set[int]:
        return {f for r in self.requests.values() if r.granted for f in r.floor_ids}

    def _position(self, req: _FloorRequest) -> int:
        """1 + the queued requests ahead of ``req`` that wait for one of its floors."""
        ahead = 0
        for rid in self.order:
            if rid == req.request_id:
                break
            other = self.requests[rid]
            if not other.granted and set(other.floor_ids) & set(req.floor_ids):
                ahead += 1
        return min(ahead + 1, 255)

    def _floor_request(self, member: _Member, msg: bfcp.Message) -> Output:
        floor_ids = tuple(dict.fromkeys(msg.floor_ids))
        unknown = [f for f in floor_ids if f not in self.floors]
        if unknown:
            return self._error(
                member, msg, ErrorCodeValue.INVALID_FLOOR_ID, f"unknown floor {unknown[0]}"
            )
        mine = [r for r in self.requests.values() if r.user_id == msg.user_id]
        queued = [r for r in self.requests.values() if not r.granted]
        if len(mine) >= self.limits.max_requests_per_user or len(queued) >= self.limits.max_queue:
            return self._error(
                member,
                msg,
                ErrorCodeValue.MAX_FLOOR_REQUESTS_REACHED,
                "too many floor requests",
            )
        req = _FloorRequest(self._allocate(), msg.user_id, member.termination, floor_ids)
        waiting = {f for r in queued for f in r.floor_ids}
        held = self._held()
        self.requests[req.request_id] = req
        self.order.append(req.request_id)
        if not (set(floor_ids) & (held | waiting)):
            req.granted = True
            data = self._status(req, msg.transaction_id, RequestStatusValue.GRANTED)
            note = (
                f"floor {list(floor_ids)} granted to {member.participant}"
                f" (request {req.request_id})"
            )
        else:
            position = self._position(req)
            data = self._status(req, msg.transaction_id, RequestStatusValue.PENDING, position)
            note = (
                f"floor {list(floor_ids)} held: {member.participant} queued at {position}"
                f" (request {req.request_id})"
            )
        return Output((Send(member.termination, data),), (Note("floor", member.termination, note),))

    def _floor_release(self, member: _Member, msg: bfcp.Message) -> Output:
        attr = msg.first(AttrType.FLOOR_REQUEST_ID)
        assert isinstance(attr, bfcp.U16)
        req = self.requests.get(attr.value)
        if req is None or req.user_id != msg.user_id:
            return self._error(
                member,
                msg,
                ErrorCodeValue.FLOOR_REQUEST_ID_DOES_NOT_EXIST,
                f"floor request {attr.value} does not exist",
            )
        status = RequestStatusValue.RELEASED if req.granted else RequestStatusValue.CANCELLED
        self._forget(req)
        first = Send(member.termination, self._status(req, msg.transaction_id, status))
        note = Note(
            "floor",
            member.termination,
            f"floor {list(req.floor_ids)} {status.name.lower()} by {member.participant}",
        )
        rest = self._grant_queued()
        return Output((first, *rest.sends), (note, *rest.notes))

    def _forget(self, req: _FloorRequest) -> None:
        del self.requests[req.request_id]
        self.order.remove(req.request_id)

    def _drop_user(self, user_id: int) -> Output:
        for req in [r for r in self.requests.values() if r.user_id == user_id]:
            self._forget(req)
        return self._grant_queued()

    def _grant_queued(self) -> Output:
        """Grant, in queue order, each queued request whose floors are free; the others get
        their new queue position."""
        sends: list[Send] = []
        notes: list[Note] = []
        held = self._held()
        for rid in list(self.order):
            req = self.requests[rid]
            if req.granted or set(req.floor_ids) & held:
                continue
            blocked = False
            for earlier in self.order[: self.order.index(rid)]:
                other = self.requests[earlier]
                if not other.granted and set(other.floor_ids) & set(req.floor_ids):
                    blocked = True
            if blocked:
                continue
            req.granted = True
            held |= set(req.floor_ids)
            if req.termination in self.members:
                data = self._status(req, SERVER_TRANSACTION, RequestStatusValue.GRANTED)
                sends.append(Send(req.termination, data))
                who = self.members[req.termination].participant
                notes.append(
                    Note(
                        "floor",
                        req.termination,
                        f"floor {list(req.floor_ids)} granted to {who}"
                        f" (request {rid}, from the queue)",
                    )
                )
        return Output(tuple(sends), tuple(notes))

    def _allocate(self) -> int:
        while True:
            candidate = self._next_request
            self._next_request = self._next_request % 0xFFFF + 1
            if candidate not in self.requests:
                return candidate


#: Primitives the MRFP's floor control server handles (HelloAck's SUPPORTED-PRIMITIVES).
SERVER_PRIMITIVES: tuple[int, ...] = (
    Primitive.FLOOR_REQUEST,
    Primitive.FLOOR_RELEASE,
    Primitive.FLOOR_REQUEST_STATUS,
    Primitive.FLOOR_REQUEST_STATUS_ACK,
    Primitive.HELLO,
    Primitive.HELLO_ACK,
    Primitive.ERROR,
    Primitive.GOODBYE,
    Primitive.GOODBYE_ACK,
)
