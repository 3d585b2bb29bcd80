"""The transaction rules of one Iq connection, sans I/O: bytes in, events out; requests and
replies in, bytes out. Time is a parameter (``now``, seconds); nothing here reads a clock.

Either end of the link uses one :class:`IqConnection`:

- :meth:`~IqConnection.receive_data` takes the bytes read from the stream (TPKT framing,
  :mod:`iq.tpkt`); :meth:`~IqConnection.next_event` then returns what they meant, one
  :data:`Event` at a time, ``None`` when nothing is left. Handling the next transaction is
  lazy, as in h11: its rule (at-most-once, timers) is applied when its event is taken, so
  what the caller does with one event (a reply sent at once) is seen by the next.
- :meth:`~IqConnection.send_request` and :meth:`~IqConnection.send_reply` return the packet
  to write. What the connection answers on its own (``Pending`` for a duplicate or a slow
  request, a cached reply, an error for a message that does not decode, 402 for the wrong
  mId) waits in :meth:`~IqConnection.packets_to_send`, one TPKT packet per H.248 message.
- :meth:`~IqConnection.timers` is the next deadline; call :meth:`~IqConnection.on_timer` when
  it is reached.

The rules (H.248.1 section 8.2.3):

- A request gets a transaction id (1..2**32-1, wrapping) and a deadline ``timeout`` seconds
  ahead; a ``Pending`` from the peer restarts it; at the deadline the transaction ends with
  :class:`TransactionTimedOut`. A request sent with a ``late_window`` is remembered that long
  after it timed out: a reply in the window is :class:`LateReplyReceived`, after it
  (:class:`LateWindowClosed`) a reply to an unknown transaction (:class:`UnknownReplyReceived`).
- At most ``max_pending`` requests wait for a reply; one more raises :class:`Overloaded`
  (a request sent with ``bounded=False``, a Release, is never refused for that).
  A request is encoded and framed before anything is recorded, so one that cannot be encoded
  raises :class:`LocalIqError` and leaves no pending transaction and no deadline behind.
- A request received is served at most once (:class:`~iq.transactions.ReplyCache`): a
  duplicate while it is served is answered ``Pending``, one after it the cached reply. While
  it is served, ``Pending`` goes out every ``pending_interval`` seconds.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TypeAlias

import attrs

from iq import codec
from iq.codec import (
    Action,
    ErrorDescriptor,
    Message,
    Transaction,
    TransactionPending,
    TransactionReply,
    TransactionRequest,
)
from iq.errors import ERROR_TEXTS, CodecError, LinkLost, LocalIqError, Overloaded, RemoteIqError
from iq.tpkt import TpktDecoder, frame
from iq.transactions import IN_PROGRESS, ReplyCache, TransactionIds

#: Seconds between Pending messages while a request is being served.
DEFAULT_PENDING_INTERVAL = 1.0
#: Seconds a timed-out request's late reply is still recognised (and cleaned up after).
LATE_REPLY_WINDOW = 120.0
#: Requests waiting for a reply at most (:class:`iq.admission.IqLimits` ``max_pending``).
DEFAULT_MAX_PENDING = 1000


def printable(text: str) -> str:
    """``text`` made safe for an H.248 quoted string and a log line (at most 200 chars)."""
    return "".join(ch if ch.isprintable() and ch != '"' else "?" for ch in text)[:200]


def error_descriptor(exc: BaseException) -> ErrorDescriptor:
    """The H.248 error descriptor for an exception (500 for anything unexpected)."""
    if isinstance(exc, RemoteIqError):
        text = exc.reason if not exc.where else f"{exc.reason} ({exc.where})"
        return ErrorDescriptor(exc.code, printable(text))
    return ErrorDescriptor(500, ERROR_TEXTS[500])


# --------------------------------------------------------------------------- events


@attrs.frozen
class RequestReceived:
    """A new request: serve it and answer with :meth:`IqConnection.send_reply`."""

    message: Message
    request: TransactionRequest


@attrs.frozen
class DuplicateRequest:
    """A request seen before; answered already (``Pending`` or the cached reply)."""

    transaction_id: int
    in_progress: bool


@attrs.frozen
class ReplyReceived:
    """The reply to one of our pending requests."""

    reply: TransactionReply
    what: str


@attrs.frozen
class PendingReceived:
    """The peer is still working on our request: its deadline was restarted."""

    transaction_id: int
    deadline: float


@attrs.frozen
class TransactionTimedOut:
    """No reply within the timeout; the transaction is over."""

    transaction_id: int
    what: str
    timeout: float


@attrs.frozen
class LateReplyReceived:
    """A reply to a request that timed out, within its late-reply window."""

    reply: TransactionReply
    what: str


@attrs.frozen
class LateWindowClosed:
    """A timed-out request's late-reply window ended; its id is forgotten."""

    transaction_id: int


@attrs.frozen
class UnknownReplyReceived:
    """A reply to no transaction of ours (dropped)."""

    reply: TransactionReply


@attrs.frozen
class UnknownPendingReceived:
    """A ``Pending`` for no transaction of ours (dropped)."""

    transaction_id: int


@attrs.frozen
class MessageRefused:
    """A message that does not decode; an error went back (on its transaction if known)."""

    error: CodecError = attrs.field(eq=str)


@attrs.frozen
class PeerErrorReceived:
    """A message-level ``Error`` descriptor from the peer."""

    error: ErrorDescriptor


@attrs.frozen
class WrongMid:
    """A message under another mId than the one the link registered as; each of its requests
    was answered 402."""

    mid: str
    registered_mid: str


@attrs.frozen
class ReplyEncodingFailed:
    """A reply given to :meth:`IqConnection.send_reply` could not be encoded; a 500 error
    went out in its place."""

    transaction_id: int
    error: LocalIqError = attrs.field(eq=str)


@attrs.frozen
class StreamBroken:
    """The TPKT framing is broken: the stream cannot be resynchronised; close it."""

    error: CodecError = attrs.field(eq=str)


Event: TypeAlias = (
    RequestReceived
    | DuplicateRequest
    | ReplyReceived
    | PendingReceived
    | TransactionTimedOut
    | LateReplyReceived
    | LateWindowClosed
    | UnknownReplyReceived
    | UnknownPendingReceived
    | MessageRefused
    | PeerErrorReceived
    | WrongMid
    | ReplyEncodingFailed
    | StreamBroken
)


@attrs.frozen
class SentRequest:
    """A request recorded as pending: its id and the packet to write."""

    transaction_id: int
    data: bytes


@attrs.frozen
class AbortedRequest:
    """A request that was pending when the connection was lost."""

    transaction_id: int
    what: str


# --------------------------------------------------------------------------- state


@attrs.define
class _Outstanding:
    what: str
    timeout: float
    deadline: float
    late_window: float | None


@attrs.frozen
class _Late:
    what: str
    until: float


@attrs.frozen
class _Refused:
    error: CodecError


# What waits in the receive queue: a decoded message, one that did not decode, or the end.
_Item: TypeAlias = Message | _Refused | StreamBroken


class IqConnection:
    """One Iq connection's transactions, either end (see the module text).

    ``mid`` is our mId (the header of every message we send); ``peer`` only names the other
    end in error texts."""

    def __init__(
        self,
        mid: str,
        *,
        peer: str = "?",
        max_pending: int = DEFAULT_MAX_PENDING,
        pending_interval: float = DEFAULT_PENDING_INTERVAL,
        replies: ReplyCache | None = None,
    ) -> None:
        self.mid = mid
        self.peer = peer
        self.max_pending = max_pending
        #: Seconds between Pending messages while a received request is being served.
        self.pending_interval = pending_interval
        #: The mId this link registered as: messages under another one are refused (402).
        self.registered_mid: str | None = None
        #: The mId of the last message accepted from the peer.
        self.peer_mid: str | None = None
        self.closed = False
        self._now = 0.0
        self._decoder = TpktDecoder()
        self._broken = False
        self._ids = TransactionIds()
        self._outstanding: dict[int, _Outstanding] = {}
        #: (deadline, id) of every outstanding request, with stale entries (answered, or
        #: restarted by a Pending) dropped when they come to the top: the earliest deadline
        #: without a scan of every pending request.
        self._deadlines: list[tuple[float, int]] = []
        self._late: dict[int, _Late] = {}
        self._replies = replies if replies is not None else ReplyCache()
        #: Received requests being served: the time of their next Pending.
        self._ticks: dict[int, float] = {}
        self._items: deque[_Item] = deque()
        self._current: deque[tuple[Message, Transaction]] = deque()
        self._events: deque[Event] = deque()
        self._outbox: list[bytes] = []

    # -- receiving

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the stream, in order. Their events come from :meth:`next_event`."""
        self._tick(now)
        if self._broken or self.closed:
            return
        try:
            payloads = self._decoder.feed(data)
        except CodecError as exc:
            self._broken = True
            self._items.append(StreamBroken(exc))
            return
        for payload in payloads:
            self._decode(payload)

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when every byte received so far has been handled."""
        while not self._events:
            if self._current:
                self._transaction(*self._current.popleft())
            elif self._items:
                self._message(self._items.popleft())
            else:
                return None
        return self._events.popleft()

    @property
    def has_packets(self) -> bool:
        """Whether :meth:`packets_to_send` has something (asking costs no list)."""
        return bool(self._outbox)

    def packets_to_send(self) -> list[bytes]:
        """What the connection answered on its own since last asked: TPKT packets, in order."""
        out, self._outbox = self._outbox, []
        return out

    def _decode(self, payload: bytes) -> None:
        try:
            self._items.append(codec.decode(payload))
        except CodecError as exc:
            self._items.append(_Refused(exc))

    def _message(self, item: _Item) -> None:
        if isinstance(item, StreamBroken):
            self._items.clear()
            self._events.append(item)
            return
        if isinstance(item, _Refused):
            exc = item.error
            err = ErrorDescriptor(exc.code, printable(f"{exc.reason} at {exc.where}"))
            self._events.append(MessageRefused(exc))
            if exc.transaction_id is not None:
                self._queue(Message(self.mid, (TransactionReply(exc.transaction_id, error=err),)))
            else:
                self._queue(Message(self.mid, error=err))
            return
        if item.error is not None:
            self._events.append(PeerErrorReceived(item.error))
            return
        if self.registered_mid is not None and item.mid != self.registered_mid:
            self._events.append(WrongMid(item.mid, self.registered_mid))
            err = ErrorDescriptor(402, f"this link is registered as {self.registered_mid}")
            for transaction in item.transactions:
                if isinstance(transaction, TransactionRequest):
                    reply = TransactionReply(transaction.transaction_id, error=err)
                    self._queue(Message(self.mid, (reply,)))
            return
        self.peer_mid = item.mid
        self._current.extend((item, t) for t in item.transactions)

    def _transaction(self, message: Message, transaction: Transaction) -> None:
        if isinstance(transaction, TransactionRequest):
            self._request(message, transaction)
        elif isinstance(transaction, TransactionReply):
            self._reply(transaction)
        else:
            self._pending(transaction)

    def _request(self, message: Message, request: TransactionRequest) -> None:
        tid = request.transaction_id
        seen = self._replies.seen(tid, self._now)
        if seen == IN_PROGRESS:
            self._events.append(DuplicateRequest(tid, in_progress=True))
            self._queue(Message(self.mid, (TransactionPending(tid),)))
            return
        if seen is not None:
            self._events.append(DuplicateRequest(tid, in_progress=False))
            self._outbox.append(seen)
            return
        self._replies.start(tid, self._now)
        self._ticks[tid] = self._now + self.pending_interval
        self._events.append(RequestReceived(message, request))

    def _reply(self, reply: TransactionReply) -> None:
        tid = reply.transaction_id
        entry = self._outstanding.pop(tid, None)
        if entry is not None:
            self._events.append(ReplyReceived(reply, entry.what))
            return
        late = self._late.pop(tid, None)
        if late is not None and late.until > self._now:
            self._events.append(LateReplyReceived(reply, late.what))
            return
        self._events.append(UnknownReplyReceived(reply))

    def _pending(self, pending: TransactionPending) -> None:
        entry = self._outstanding.get(pending.transaction_id)
        if entry is None:
            self._events.append(UnknownPendingReceived(pending.transaction_id))
            return
        entry.deadline = self._now + entry.timeout
        self._push_deadline(entry.deadline, pending.transaction_id)
        self._events.append(PendingReceived(pending.transaction_id, entry.deadline))

    # -- sending

    def send_request(
        self,
        actions: tuple[Action, ...],
        now: float,
        *,
        timeout: float,
        what: str = "",
        late_window: float | None = None,
        bounded: bool = True,
    ) -> SentRequest:
        """Record a request as pending and return its packet.

        Raises :class:`LinkLost` once the connection is lost, :class:`Overloaded` when
        ``max_pending`` requests already wait (unless ``bounded`` is false), :class:`LocalIqError`
        when it cannot be encoded (nothing is recorded then). ``late_window``: seconds a reply
        after the timeout is still told apart (:class:`LateReplyReceived`).

        ``bounded=False`` is for a request that frees what the peer holds (a Release): refusing
        it would leave that held for good, and how many can be owed is bounded by what was
        reserved, not by this link's traffic."""
        self._tick(now)
        if self.closed:
            raise LinkLost(f"Iq link to {self.peer} is not up")
        if bounded and len(self._outstanding) >= self.max_pending:
            raise Overloaded(f"{len(self._outstanding)} Iq requests to {self.peer} already pending")
        tid = self._ids.allocate()
        packet = frame(codec.encode(Message(self.mid, (TransactionRequest(tid, actions),))))
        self._outstanding[tid] = _Outstanding(what, timeout, now + timeout, late_window)
        self._push_deadline(now + timeout, tid)
        return SentRequest(tid, packet)

    def send_reply(self, reply: TransactionReply, now: float) -> bytes:
        """The packet answering a request of a :class:`RequestReceived`; cached for duplicates.

        A reply that cannot be encoded is replaced by a 500 error
        (:class:`ReplyEncodingFailed`)."""
        self._tick(now)
        tid = reply.transaction_id
        try:
            packet = frame(codec.encode(Message(self.mid, (reply,))))
        except LocalIqError as exc:
            self._events.append(ReplyEncodingFailed(tid, exc))
            err = TransactionReply(tid, error=ErrorDescriptor(500, ERROR_TEXTS[500]))
            packet = frame(codec.encode(Message(self.mid, (err,))))
        self._ticks.pop(tid, None)
        self._replies.finish(tid, packet, now)
        return packet

    def _queue(self, message: Message) -> None:
        self._outbox.append(frame(codec.encode(message)))

    # -- time

    def timers(self) -> float | None:
        """The next deadline (a request's timeout, a Pending to send, a late window's end)."""
        heap, outstanding = self._deadlines, self._outstanding
        while heap:
            deadline, tid = heap[0]
            entry = outstanding.get(tid)
            if entry is not None and entry.deadline == deadline:
                break
            heapq.heappop(heap)
        best = heap[0][0] if heap else None
        # Requests being served and late windows: none in the steady state, a few at most.
        if self._ticks:
            tick = min(self._ticks.values())
            best = tick if best is None or tick < best else best
        if self._late:
            until = min(late.until for late in self._late.values())
            best = until if best is None or until < best else best
        return best

    def _push_deadline(self, deadline: float, tid: int) -> None:
        """Record an outstanding request's (new) deadline; ``tid`` is in ``_outstanding``."""
        heap = self._deadlines
        if len(heap) > 2 * len(self._outstanding) + 64:
            # Mostly stale (replies arrived out of order): keep only the live entries, this
            # one's included.
            heap[:] = [(e.deadline, t) for t, e in self._outstanding.items()]
            heapq.heapify(heap)
        else:
            heapq.heappush(heap, (deadline, tid))

    def on_timer(self, now: float) -> None:
        """Apply every deadline reached by ``now`` (events and packets to send)."""
        self._tick(now)
        if self.closed:
            return
        expired = sorted(
            (e.deadline, tid) for tid, e in self._outstanding.items() if e.deadline <= now
        )
        for _, tid in expired:
            entry = self._outstanding.pop(tid)
            self._events.append(TransactionTimedOut(tid, entry.what, entry.timeout))
            if entry.late_window is not None:
                self._late[tid] = _Late(entry.what, now + entry.late_window)
        for tid, when in list(self._ticks.items()):
            if when <= now:
                # H.248.1 section 8.2.3: Pending tells the requester to keep waiting.
                self._queue(Message(self.mid, (TransactionPending(tid),)))
                self._ticks[tid] = now + self.pending_interval
        for tid, late in list(self._late.items()):
            if late.until <= now:
                del self._late[tid]
                self._events.append(LateWindowClosed(tid))

    def _tick(self, now: float) -> None:
        self._now = max(self._now, now)

    # -- the end

    def connection_lost(self) -> list[AbortedRequest]:
        """The stream is gone: every pending request ends (returned, in the order sent)."""
        self.closed = True
        aborted = [AbortedRequest(tid, e.what) for tid, e in self._outstanding.items()]
        self._outstanding.clear()
        self._deadlines.clear()
        self._ticks.clear()
        self._late.clear()
        self._items.clear()
        self._current.clear()
        return aborted

    @property
    def pending_count(self) -> int:
        """Requests waiting for a reply."""
        return len(self._outstanding)
