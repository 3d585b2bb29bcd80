"""SIP over UDP for the elements that are user agents (the MSRP AS, the list server, the MRFC):
the socket, the parse and check of every datagram, the responses kept for retransmitted
requests, and client transactions with RFC 3261 §17.1 retransmissions (Twisted edge).

One :class:`UdpUserAgent` per element. The element gets every request
(``on_request(request, addr)``; a retransmission of a request it already answered with a
final response is answered again here and not passed on) and every response that matches no
transaction it sent (``on_stray(response)``: a 2xx an INVITE's far end sends again, to be
ACKed again). ``request()`` sends a request and fires with its final response:

- Timer A/E: the request again after T1, doubling; an INVITE is not sent again once a
  provisional response came (§17.1.1.2), any other request goes on every T2 after one
  (§17.1.2.2);
- Timer B/F: no final response in 64*T1 s is a :class:`TimeoutError`;
- a non-2xx final response to an INVITE is ACKed in the same transaction (§17.1.1.3).

A datagram that is not SIP, or a request that fails the message checks, is dropped with a
warning; an exception in the element's handler is logged and never ends the element.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.message import Message, Request, Response, parse_datagram, validate_request

log = Logger(namespace="pcscf.udpua")

Address = tuple[str, int]

#: RFC 3261 timers (seconds).
T1 = 0.5
T2 = 4.0
#: The largest datagram read (a protected MESSAGE or an SDP with many streams can pass 8 KiB,
#: Twisted's default).
MAX_DATAGRAM = 65_535


@attrs.define(eq=False)
class _ClientTx:
    request: Request
    dest: Address
    done: defer.Deferred[Response]
    interval: float
    deadline: float
    timer: Any = None
    provisional: bool = False


class _Socket(DatagramProtocol):
    def __init__(self, owner: UdpUserAgent) -> None:
        self.owner = owner

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.owner.datagram(datagram, (addr[0], addr[1]))


def ack_of_failure(invite: Request, response: Response) -> Request:
    """The hop-by-hop ACK of a non-2xx final response (RFC 3261 §17.1.1.3)."""
    keep = ("via", "route", "from", "call-id", "max-forwards")
    headers = [(n, v) for n, v in invite.headers if n.lower() in keep]
    headers += [("To", response.get("To") or ""), ("CSeq", f"{invite.cseq[0]} ACK")]
    return Request(tuple(headers), b"", "ACK", invite.uri)


class UdpUserAgent:
    """The SIP/UDP transport of one user-agent element (see the module's docstring).

    ``name`` starts every log line (``msrp-as``, ``list-server``, ``mrfc``); ``answered``
    bounds the final responses kept for retransmitted requests (the oldest go first)."""

    def __init__(
        self,
        reactor: Any,
        name: str,
        on_request: Callable[[Request, Address], None],
        *,
        on_stray: Callable[[Response], None] | None = None,
        answered: int = 1024,
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.on_request = on_request
        self.on_stray = on_stray
        self.answered_limit = answered
        self._port: Any = None
        self._client: dict[str, _ClientTx] = {}
        self._answered: OrderedDict[str, Response] = OrderedDict()
        self._timers: list[Any] = []

    # -- the socket

    def listen(self, host: str, port: int) -> None:
        self._port = self.reactor.listenUDP(
            port, _Socket(self), interface=host, maxPacketSize=MAX_DATAGRAM
        )

    @property
    def address(self) -> Address:
        host = self._port.getHost()
        return (host.host, host.port)

    @property
    def listening(self) -> bool:
        return self._port is not None

    def stop(self) -> defer.Deferred[None]:
        """Forget every transaction (their Deferreds never fire), cancel what :meth:`later`
        scheduled and close the socket."""
        for tx in self._client.values():
            if tx.timer is not None and tx.timer.active():
                tx.timer.cancel()
        self._client.clear()
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()
        port, self._port = self._port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)

    def send(self, message: Message, dest: Address) -> None:
        if self._port is not None:
            self._port.write(message.serialise(), dest)

    def via(self, branch: str) -> str:
        """Our ``Via`` with ``branch`` (``rport`` asked for)."""
        host, port = self.address
        return f"SIP/2.0/UDP {host}:{port};branch={branch};rport"

    def later(self, delay: float, f: Callable[..., object], *args: Any) -> None:
        """``reactor.callLater``, cancelled by :meth:`stop`."""
        self._timers = [c for c in self._timers if c.active()]
        self._timers.append(self.reactor.callLater(delay, f, *args))

    def retransmit_2xx(self, invite: Request, response: Response, done: Callable[[], bool]) -> None:
        """Send the 2xx to ``invite`` again at T1, doubling to T2, until ``done()`` (the ACK
        came, or the call ended) or 64*T1 s (RFC 3261 §13.3.1.4); the first copy is the
        caller's to send."""
        self.later(T1, self._again_2xx, invite, response, done, T1, T1)

    def _again_2xx(
        self,
        invite: Request,
        response: Response,
        done: Callable[[], bool],
        interval: float,
        spent: float,
    ) -> None:
        if done() or spent >= 64 * T1:
            return
        self.send(response, invite.top_via.response_address())
        interval = min(interval * 2, T2)
        self.later(interval, self._again_2xx, invite, response, done, interval, spent + interval)

    # -- input

    def datagram(self, data: bytes, addr: Address) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        try:
            message = parse_datagram(data)
            if isinstance(message, Request):
                validate_request(message)
        except RemoteSipError as exc:
            log.warn(
                "{name}: dropped a message from {peer} that is not good SIP: {error}",
                name=self.name,
                peer=peer,
                error=str(exc),
            )
            return
        try:
            if isinstance(message, Response):
                self._response(message)
                return
            again = self._answered.get(message.top_via.branch)
            if again is not None and message.method != "ACK":
                self.send(again, message.top_via.response_address())
                return
            self.on_request(message, addr)
        except Exception as exc:  # a bad message never ends the element
            log.failure(
                "{name}: handling a message from {peer} failed",
                Failure(exc),
                name=self.name,
                peer=peer,
            )

    # -- server side

    def respond(self, request: Request, response: Response, addr: Address) -> None:
        """Send ``response``; a final one to a request other than INVITE is kept, so that a
        retransmitted request gets it again (an INVITE's 2xx is the element's to resend)."""
        if response.status >= 200 and request.method != "INVITE":
            self._answered[request.top_via.branch] = response
            while len(self._answered) > self.answered_limit:
                self._answered.popitem(last=False)
        self.send(response, request.top_via.response_address() if request.vias else addr)

    # -- client transactions

    @property
    def pending(self) -> int:
        """Client transactions waiting for their final response."""
        return len(self._client)

    def request(self, request: Request, dest: Address) -> defer.Deferred[Response]:
        """Send ``request`` (not ACK) with retransmissions; fires with its final response or
        fails with :class:`TimeoutError` after 64*T1 s."""
        done: defer.Deferred[Response] = defer.Deferred()
        now = float(self.reactor.seconds())
        tx = _ClientTx(request, dest, done, T1, now + 64 * T1)
        self._client[request.top_via.branch] = tx
        self.send(request, dest)
        tx.timer = self.reactor.callLater(T1, self._resend, tx)
        return done

    def _resend(self, tx: _ClientTx) -> None:
        branch = tx.request.top_via.branch
        if self._client.get(branch) is not tx:
            return
        if float(self.reactor.seconds()) >= tx.deadline:
            del self._client[branch]
            tx.done.errback(TimeoutError(f"no final response to {tx.request.method}"))
            return
        invite = tx.request.method == "INVITE"
        if not (invite and tx.provisional):
            self.send(tx.request, tx.dest)
        tx.interval = T2 if tx.provisional else min(tx.interval * 2, T2)
        tx.timer = self.reactor.callLater(tx.interval, self._resend, tx)

    def _response(self, response: Response) -> None:
        if not response.vias:
            return
        tx = self._client.get(response.top_via.branch)
        if tx is None:
            if self.on_stray is not None:
                self.on_stray(response)
            return
        if response.status < 200:
            tx.provisional = True
            return
        del self._client[response.top_via.branch]
        if tx.timer is not None and tx.timer.active():
            tx.timer.cancel()
        if tx.request.method == "INVITE" and response.status >= 300:
            self.send(ack_of_failure(tx.request, response), tx.dest)
        tx.done.callback(response)


__all__ = ["T1", "T2", "Address", "UdpUserAgent", "ack_of_failure"]
