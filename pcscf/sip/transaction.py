"""The RFC 3261 transaction layer (section 17), sans I/O: client and server transactions for
INVITE and non-INVITE requests, the RFC 6026 Accepted state, and timers A to M as data.

A transaction here is only its state machine: which state it is in, when each of its timers is
due, and what a response, a request retransmission, an ACK or a timer does to it. The element
using it (the proxy core) keeps the messages, the peers and what a transaction is *for*, sends
what a transition asks for and puts each returned deadline on a :class:`Schedule`. Time is a
parameter (``now``, seconds); nothing here reads a clock or touches a socket.

Where this differs from the letter of the RFC, it does so to keep a transaction longer: a
Confirmed server INVITE transaction stays until Timer H (not Timer I), and a completed server
non-INVITE transaction stays 64*T1 over TCP too (Timer J); both absorb more retransmissions, not
fewer. A 2xx sent again in Accepted (client or server) restarts Timer M or L.
"""

from __future__ import annotations

import collections
import enum
import heapq
import itertools
from typing import Generic, Literal, TypeVar

import attrs

from pcscf.sip.message import Response

Transport = Literal["udp", "tcp"]
#: A server transaction: the top Via's branch and sent-by of the request, and its method
#: (RFC 3261 17.2.3; an ACK or a CANCEL is matched to the INVITE's by branch and sent-by).
ServerKey = tuple[str, str, str]
#: A client transaction: the branch of our Via and the method (RFC 3261 17.1.3).
ClientKey = tuple[str, str]


class TransactionError(ValueError):
    """A transition the state machine does not have (a bug in the caller, not in a peer)."""


# -- timers ----------------------------------------------------------------------------------
@attrs.frozen
class TimerRule:
    """What a timer is for, where it is defined, and how long it runs."""

    side: Literal["client", "server"]
    invite: bool
    defined: str
    purpose: str
    duration: str


class Timer(enum.Enum):
    """The transaction timers (RFC 3261 table 4, Timer C from 16.6, L and M from RFC 6026).

    Each value is the timer's :class:`TimerRule`; :meth:`TimerValues.duration` gives the
    seconds this implementation runs it for."""

    A = TimerRule(
        "client",
        True,
        "RFC 3261 17.1.1.2",
        "retransmits an INVITE in Calling (UDP only)",
        "T1 at first, doubling at each firing",
    )
    B = TimerRule(
        "client",
        True,
        "RFC 3261 17.1.1.2",
        "gives up on an INVITE with no response (408); after Timer C, on one with no final",
        "64*T1",
    )
    C = TimerRule(
        "client",
        True,
        "RFC 3261 16.6 step 11",
        "bounds how long an INVITE may ring in Proceeding: on firing, CANCEL it",
        "timer C (more than 3 minutes), restarted by each provisional response",
    )
    D = TimerRule(
        "client",
        True,
        "RFC 3261 17.1.1.2",
        "absorbs (and ACKs again) retransmitted non-2xx finals in Completed",
        "32 s over UDP, 0 over TCP",
    )
    E = TimerRule(
        "client",
        False,
        "RFC 3261 17.1.2.2",
        "retransmits a non-INVITE request in Trying and Proceeding (UDP only)",
        "T1 at first, doubling up to T2; T2 once a provisional response came",
    )
    F = TimerRule(
        "client",
        False,
        "RFC 3261 17.1.2.2",
        "gives up on a non-INVITE with no final response (408)",
        "64*T1",
    )
    G = TimerRule(
        "server",
        True,
        "RFC 3261 17.2.1",
        "retransmits a non-2xx final to an INVITE in Completed (UDP only)",
        "T1 at first, doubling up to T2",
    )
    H = TimerRule(
        "server",
        True,
        "RFC 3261 17.2.1",
        "ends a Completed or Confirmed INVITE transaction (the ACK never came, or it is absorbed)",
        "64*T1",
    )
    I = TimerRule(  # noqa: E741 (the RFC names it so)
        "server",
        True,
        "RFC 3261 17.2.1",
        "absorbs ACK retransmissions in Confirmed: not run here, Timer H (longer) does it",
        "T4 over UDP, 0 over TCP",
    )
    J = TimerRule(
        "server",
        False,
        "RFC 3261 17.2.2",
        "absorbs retransmitted non-INVITE requests in Completed (answering them again)",
        "64*T1, over TCP too (the RFC allows 0 there)",
    )
    K = TimerRule(
        "client",
        False,
        "RFC 3261 17.1.2.2",
        "absorbs retransmitted finals to a non-INVITE in Completed",
        "T4 over UDP, 0 over TCP",
    )
    L = TimerRule(
        "server",
        True,
        "RFC 6026 8.7",
        "ends an Accepted INVITE transaction (INVITE retransmissions after a 2xx absorbed)",
        "64*T1, restarted by each 2xx sent",
    )
    M = TimerRule(
        "client",
        True,
        "RFC 6026 8.4",
        "ends an Accepted INVITE transaction (2xx retransmissions passed on until then)",
        "64*T1, restarted by each 2xx passed on",
    )

    @property
    def rule(self) -> TimerRule:
        rule: TimerRule = self.value
        return rule


@attrs.frozen
class TimerValues:
    """T1, T2, T4 (RFC 3261 table 4) and Timer C, in seconds, and the timers derived from them."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    c: float = 180.0

    def duration(self, timer: Timer, transport: Transport) -> float:
        """Seconds ``timer`` runs for over ``transport`` (for A, E and G: the first interval)."""
        reliable = transport == "tcp"
        match timer:
            case Timer.A | Timer.E | Timer.G:
                return self.t1
            case Timer.B | Timer.F | Timer.H | Timer.J | Timer.L | Timer.M:
                return 64 * self.t1
            case Timer.C:
                return self.c
            case Timer.D:
                return 0.0 if reliable else 32.0
            case Timer.I | Timer.K:
                return 0.0 if reliable else self.t4

    def next_interval(self, timer: Timer, interval: float) -> float:
        """The retransmission interval after one of ``interval`` (A: doubling, E and G: doubling
        up to T2)."""
        if timer is Timer.A:
            return interval * 2
        if timer in (Timer.E, Timer.G):
            return min(interval * 2, self.t2)
        raise TransactionError(f"Timer {timer.name} does not retransmit")


@attrs.frozen
class Fired:
    """What a timer did: which one fired (None: none was due) and the deadline it set."""

    timer: Timer | None = None
    wake: float | None = None


#: A deadline that fired nothing (it had moved): one shared value, the class is frozen.
_NOTHING = Fired()


# -- client transactions ---------------------------------------------------------------------
class ClientState(enum.Enum):
    #: INVITE sent, nothing heard (RFC 3261 17.1.1).
    CALLING = "calling"
    #: Non-INVITE sent, nothing heard (17.1.2).
    TRYING = "trying"
    #: A provisional response came.
    PROCEEDING = "proceeding"
    #: A final response came (for an INVITE: a non-2xx, ACKed).
    COMPLETED = "completed"
    #: A 2xx to an INVITE came (RFC 6026).
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


@attrs.frozen
class Reception:
    """What a response does to a client transaction: whether to ACK it (hop by hop, a non-2xx
    final to an INVITE), whether the transaction's user sees it, and a deadline to set."""

    ack: bool = False
    pass_up: bool = True
    wake: float | None = None


def _client_start(txn: ClientTransaction) -> ClientState:
    return ClientState.CALLING if txn.invite else ClientState.TRYING


@attrs.define
class ClientTransaction:
    """A client transaction (RFC 3261 17.1): what a request we sent is waiting for.

    ``passes_2xx_on``: a 2xx to an INVITE that comes again (a retransmission, another fork) goes
    to the transaction's user, as a proxy forwards each one (RFC 6026); False for a request the
    element sent itself, whose user takes the first 2xx only."""

    invite: bool
    transport: Transport
    timers: TimerValues = attrs.field(factory=TimerValues)
    passes_2xx_on: bool = True
    state: ClientState = attrs.field(default=attrs.Factory(_client_start, takes_self=True))
    #: Timer A or E: the next retransmission, and the interval that led to it.
    retransmit_at: float | None = None
    interval: float = 0.0
    #: Timer B, C or F: when to give up (or, C, to CANCEL).
    timeout_at: float | None = None
    #: Timer D, K or M: when the transaction ends after its final response.
    expire_at: float | None = None
    timer_c_fired: bool = False

    @classmethod
    def for_method(
        cls, method: str, transport: Transport, timers: TimerValues, *, passes_2xx_on: bool = True
    ) -> ClientTransaction:
        return cls(method == "INVITE", transport, timers, passes_2xx_on)

    @property
    def unanswered(self) -> bool:
        """Nothing heard from the peer yet (Calling or Trying)."""
        return self.state in (ClientState.CALLING, ClientState.TRYING)

    @property
    def pending(self) -> bool:
        """No final response yet: a CANCEL still means something."""
        return self.state in (ClientState.CALLING, ClientState.TRYING, ClientState.PROCEEDING)

    def start(self, now: float) -> list[float]:
        """The request has been sent: start the retransmission timer (UDP) and the timeout.
        Returns the deadlines to wake at."""
        if self.state is not _client_start(self) or self.timeout_at is not None:
            raise TransactionError(f"client transaction already started ({self.state.name})")
        wakes: list[float] = []
        if self.transport == "udp":
            self.interval = self.timers.duration(self._retransmit_timer, self.transport)
            self.retransmit_at = now + self.interval
            wakes.append(self.retransmit_at)
        give_up = Timer.B if self.invite else Timer.F
        self.timeout_at = now + self.timers.duration(give_up, self.transport)
        wakes.append(self.timeout_at)
        return wakes

    def receive(self, status: int, now: float) -> Reception:
        """A response with ``status`` matched this transaction."""
        if status < 200:
            return Reception(wake=self._provisional(now))
        if self.state in (ClientState.COMPLETED, ClientState.ACCEPTED):
            if self.invite and status >= 300:
                return Reception(ack=True, pass_up=False)  # a retransmitted non-2xx final
            if not self.invite or not self.passes_2xx_on:
                return Reception(pass_up=False)
        elif self.state is ClientState.TERMINATED:
            return Reception(pass_up=False)
        return self._final(status, now)

    def _provisional(self, now: float) -> float | None:
        if self.state in (ClientState.CALLING, ClientState.TRYING):
            self.state = ClientState.PROCEEDING
            if not self.invite and self.retransmit_at is not None:
                self.interval = self.timers.t2
        if not self.invite or self.state is not ClientState.PROCEEDING:
            return None
        # Timer A and B stop; Timer C, restarted by every provisional, bounds the ringing.
        self.retransmit_at = None
        if self.timer_c_fired:
            return None
        self.timeout_at = now + self.timers.duration(Timer.C, self.transport)
        return self.timeout_at

    def _final(self, status: int, now: float) -> Reception:
        self.retransmit_at = None
        self.timeout_at = None
        ack = False
        if self.invite and status >= 300:
            self.state, linger, ack = ClientState.COMPLETED, Timer.D, True
        elif self.invite:
            self.state, linger = ClientState.ACCEPTED, Timer.M
        else:
            self.state, linger = ClientState.COMPLETED, Timer.K
        self.expire_at = now + self.timers.duration(linger, self.transport)
        return Reception(ack=ack, wake=self.expire_at)

    def fire(self, now: float) -> Fired:
        """A deadline of this transaction is due (or was: one that moved fires nothing)."""
        if self.expire_at is not None and now >= self.expire_at:
            linger = self._linger_timer
            self.state = ClientState.TERMINATED
            return Fired(linger)
        if self.timeout_at is not None and now >= self.timeout_at:
            if self.invite and self.state is ClientState.PROCEEDING and not self.timer_c_fired:
                self.timer_c_fired = True
                self.timeout_at = now + self.timers.duration(Timer.B, self.transport)
                return Fired(Timer.C, self.timeout_at)
            self.state = ClientState.TERMINATED
            return Fired(Timer.B if self.invite else Timer.F)
        if self.retransmit_at is not None and now >= self.retransmit_at:
            timer = self._retransmit_timer
            self.interval = self.timers.next_interval(timer, self.interval)
            self.retransmit_at = now + self.interval
            return Fired(timer, self.retransmit_at)
        return _NOTHING

    def transport_failed(self) -> None:
        """The transport could not carry the request (RFC 3261 17.1.1.2, 17.1.2.2)."""
        self.state = ClientState.TERMINATED
        self.retransmit_at = self.timeout_at = self.expire_at = None

    @property
    def _retransmit_timer(self) -> Timer:
        return Timer.A if self.invite else Timer.E

    @property
    def _linger_timer(self) -> Timer:
        if self.state is ClientState.ACCEPTED:
            return Timer.M
        return Timer.D if self.invite else Timer.K


# -- server transactions ---------------------------------------------------------------------
class ServerState(enum.Enum):
    #: A non-INVITE request came; no response yet (RFC 3261 17.2.2).
    TRYING = "trying"
    #: A provisional response was sent (an INVITE starts here: 100 Trying goes at once).
    PROCEEDING = "proceeding"
    #: A final response was sent (for an INVITE: a non-2xx, awaiting its ACK).
    COMPLETED = "completed"
    #: The ACK of a non-2xx final came (17.2.1).
    CONFIRMED = "confirmed"
    #: A 2xx to an INVITE was sent (RFC 6026).
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


def _server_start(txn: ServerTransaction) -> ServerState:
    return ServerState.PROCEEDING if txn.invite else ServerState.TRYING


@attrs.define
class ServerTransaction:
    """A server transaction (RFC 3261 17.2): a request we received and our answers to it."""

    invite: bool
    transport: Transport
    timers: TimerValues = attrs.field(factory=TimerValues)
    state: ServerState = attrs.field(default=attrs.Factory(_server_start, takes_self=True))
    #: The last response sent: what a retransmitted request is answered with.
    last: Response | None = None
    #: Timer G: the next retransmission of a non-2xx final, and the interval that led to it.
    retransmit_at: float | None = None
    interval: float = 0.0
    #: Timer H, J or L: when the transaction ends after its final response.
    expire_at: float | None = None

    @classmethod
    def for_method(
        cls, method: str, transport: Transport, timers: TimerValues
    ) -> ServerTransaction:
        return cls(method == "INVITE", transport, timers)

    @property
    def final(self) -> bool:
        """A final response has been sent."""
        return self.state not in (ServerState.TRYING, ServerState.PROCEEDING)

    def respond(self, response: Response, now: float) -> list[float]:
        """``response`` is being sent: returns the deadlines to wake at. After a final, only a
        2xx after a 2xx may follow (a proxy passes each one on)."""
        status = response.status
        accepted = self.state in (ServerState.ACCEPTED, ServerState.TERMINATED) and (
            self.last is not None and 200 <= self.last.status < 300
        )
        if self.final and not (accepted and 200 <= status < 300):
            raise TransactionError(f"{status} after the final response ({self.state.name})")
        self.last = response
        if self.state is ServerState.TERMINATED:
            return []
        if status < 200:
            self.state = ServerState.PROCEEDING
            return []
        if self.invite and status < 300:
            self.state, linger = ServerState.ACCEPTED, Timer.L
        elif self.invite:
            self.state, linger = ServerState.COMPLETED, Timer.H
        else:
            self.state, linger = ServerState.COMPLETED, Timer.J
        self.expire_at = now + self.timers.duration(linger, self.transport)
        wakes = [self.expire_at]
        if linger is Timer.H and self.transport == "udp":
            self.interval = self.timers.duration(Timer.G, self.transport)
            self.retransmit_at = now + self.interval
            wakes.append(self.retransmit_at)
        return wakes

    def request_again(self) -> Response | None:
        """The request came again: the response to send again (None: none sent yet)."""
        return self.last

    def receive_ack(self) -> bool:
        """An ACK matched this INVITE transaction: True if it is the ACK of our non-2xx final
        (absorbed here), False if it is not ours to absorb (an ACK for a 2xx goes end to end)."""
        if not self.invite or self.state not in (ServerState.COMPLETED, ServerState.CONFIRMED):
            return False
        self.state = ServerState.CONFIRMED
        self.retransmit_at = None
        return True

    def fire(self, now: float) -> Fired:
        """A deadline of this transaction is due (or was: one that moved fires nothing)."""
        if self.expire_at is not None and now >= self.expire_at:
            linger = self._linger_timer
            self.state = ServerState.TERMINATED
            return Fired(linger)
        if self.retransmit_at is not None and now >= self.retransmit_at and self.last is not None:
            self.interval = self.timers.next_interval(Timer.G, self.interval)
            self.retransmit_at = now + self.interval
            return Fired(Timer.G, self.retransmit_at)
        return _NOTHING

    @property
    def _linger_timer(self) -> Timer:
        if self.state is ServerState.ACCEPTED:
            return Timer.L
        return Timer.H if self.invite else Timer.J


# -- the schedule ----------------------------------------------------------------------------
@attrs.frozen
class ClientDue:
    """A deadline of the client transaction ``key``."""

    key: ClientKey


@attrs.frozen
class ServerDue:
    """A deadline of the server transaction ``key``."""

    key: ServerKey


EntryT = TypeVar("EntryT")


#: Lanes a :class:`Schedule` keeps at most: past that, deadlines of a new delay go to its heap.
MAX_LANES = 64

_Item = tuple[float, int, EntryT]


class Schedule(Generic[EntryT]):
    """Deadlines in time order, ties in the order they were set. An entry says whose deadline
    it is, not what to do: the owner looks at its state when the entry comes due, so a
    deadline that has since moved fires nothing.

    A SIP element sets its deadlines from a handful of delays (T1 and its doublings, T2, T4,
    64*T1), and under load tens of thousands are pending at once (about 50,000 at 300 calls/s,
    most of them the 32 s of Timers B/F, D, H, J and L). In one heap of them all, each pop
    sifts through some 16 levels of tuples scattered in memory, and that cost grows with the
    load (docs/performance.md, "Sustained load"). So a deadline set with ``now`` goes to the
    *lane* of its delay (``when - now`` to the millisecond): a FIFO whose deadlines come in
    time order, since the clock does not go back; a small heap holds each lane's first
    deadline. A deadline set
    without ``now``, one earlier than the last of its lane, or one of a new delay when
    :data:`MAX_LANES` lanes are in use goes to a heap of its own. The order in which entries
    come out is that of one heap of ``(when, order set)``: ``add``'s ``now`` only says where to
    keep them.
    """

    def __init__(self) -> None:
        # (when, seq, entry): plain tuples compare in C; seq is unique, so an entry is never
        # compared (an attrs class with order=True cost ~5% of a call's CPU in heap pops).
        self._lanes: dict[float, collections.deque[_Item[EntryT]]] = {}
        #: (when, seq, delay) of each lane's first deadline.
        self._heads: list[tuple[float, int, float]] = []
        self._heap: list[_Item[EntryT]] = []
        self._seq = itertools.count()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, when: float | None, entry: EntryT, now: float | None = None) -> None:
        """Put ``entry`` due at ``when`` (None: no deadline, nothing kept); ``now``: the time
        it was set at, which lets it go to the lane of its delay."""
        if when is None:
            return
        item = (when, next(self._seq), entry)
        self._len += 1
        if now is not None:
            # To the millisecond: ``(now + d) - now`` is d give or take a few units in the
            # last place of ``now``, and one delay should have one lane. (A lane's order does
            # not rest on its key: a deadline earlier than its lane's last goes to the heap.)
            delay = round(when - now, 3)
            lane = self._lanes.get(delay)
            if lane is None:
                if len(self._lanes) < MAX_LANES:
                    self._lanes[delay] = collections.deque((item,))
                    heapq.heappush(self._heads, (when, item[1], delay))
                    return
            elif lane[-1][0] <= when:
                lane.append(item)
                return
        heapq.heappush(self._heap, item)

    def next_deadline(self) -> float | None:
        heads, heap = self._heads, self._heap
        if heads:
            return heads[0][0] if not heap or heads[0][0] <= heap[0][0] else heap[0][0]
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> EntryT | None:
        """The earliest entry due at ``now`` (taken off), or None."""
        heads, heap = self._heads, self._heap
        if heads:
            head = heads[0]
            if not heap or head[:2] < heap[0][:2]:
                if head[0] > now:
                    return None
                self._len -= 1
                lane = self._lanes[head[2]]
                item = lane.popleft()
                if lane:
                    first = lane[0]
                    heapq.heapreplace(heads, (first[0], first[1], head[2]))
                else:
                    heapq.heappop(heads)
                    del self._lanes[head[2]]
                return item[2]
        if not heap or heap[0][0] > now:
            return None
        self._len -= 1
        return heapq.heappop(heap)[2]
