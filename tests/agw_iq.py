"""An Iq GatewayHandler over an in-process AccessGateway, for the P-CSCF e2ae tests.

Maps the Iq profile onto :class:`accessgw.gateway.AccessGateway`: one AGW termination per
stream, named ``acc/N`` (access side) and ``core/N`` (core side) on Iq; AGW events become Notify
requests. Run as a process (``python -m tests.agw_iq --iq PORT``) it registers with the P-CSCF,
prints ``agw ready`` and, on SIGTERM, ``held=<terminations still reserved>``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any, cast

from accessgw.gateway import AccessGateway
from accessgw.termination import (
    Closed,
    Event,
    StreamFailed,
    TcpFailure,
    Timers,
    TlsEstablished,
    TlsFailure,
)
from certs.generate import CertAndKey, generate
from iq import profile
from iq.errors import UnknownContext, UnknownTermination
from iq.link import IqAgent


class AgwHandler:
    """GatewayHandler: Reserve/Configure/Release on an AccessGateway; events -> Notify."""

    def __init__(self, gateway: AccessGateway, reactor: Any) -> None:
        self.gw = gateway
        self.reactor = reactor
        self.agent: IqAgent | None = None
        self._next_context = 1
        self.contexts: dict[int, list[str]] = {}
        self.where: dict[str, tuple[int, int]] = {}  # agw term -> (context, stream)
        self.requests: list[object] = []
        gateway.add_observer(self._event)

    @staticmethod
    def _term(iq_id: str) -> str:
        return "agw/" + iq_id.split("/", 1)[1]

    def reserve(self, request: profile.ReserveRequest) -> profile.ReserveReply:
        self.requests.append(request)
        if request.context is None:
            context = self._next_context
            self._next_context += 1
            self.contexts[context] = []
        elif request.context in self.contexts:
            context = request.context
        else:
            raise UnknownContext(f"no context {request.context}")
        out = []
        for s in request.streams:
            tls_role = "client" if s.access_setup == "active" else "server"
            core_role = "connect" if s.core_setup == "active" else "listen"
            r = self.gw.reserve(
                stream=str(s.stream),
                tls_role=tls_role,
                core_role=core_role,
                fingerprints=s.ue_fingerprints,
                iq_context=str(context),
            )
            if s.core_address is not None and core_role == "connect":
                self.gw.configure(
                    r.termination, core_address=(s.core_address.host, s.core_address.port)
                )
            if s.ue_address is not None and tls_role == "client":
                self.gw.configure(r.termination, ue_address=(s.ue_address.host, s.ue_address.port))
            self.contexts[context].append(r.termination)
            self.where[r.termination] = (context, s.stream)
            n = r.termination.split("/", 1)[1]
            out.append(
                profile.ReservedStream(
                    s.stream,
                    f"acc/{n}",
                    f"core/{n}",
                    profile.Endpoint(r.access_ip, r.access_port or 9),
                    profile.Endpoint(r.core_ip, r.core_port or 9),
                    self.gw.fingerprint(request.agw_fingerprint_hash),
                    s.access_setup,
                    s.core_setup,
                )
            )
        return profile.ReserveReply(context, tuple(out))

    def configure(self, request: profile.ConfigureRequest) -> profile.ConfigureReply:
        self.requests.append(request)
        for s in request.streams:
            iq_id = s.access_termination or s.core_termination
            term = self._term(iq_id)
            if term not in self.gw.terminations:
                raise UnknownTermination("no such termination", where=iq_id)
            session = self.gw._session(term)
            core = s.core_address
            self.gw.configure(
                term,
                fingerprints=s.ue_fingerprints or None,
                ue_address=(s.ue_address.host, s.ue_address.port) if s.ue_address else None,
                core_address=(core.host, core.port)
                if core is not None and session.term.core_role == "connect"
                else None,
                establish_tls=s.establish_tls,
            )
        return profile.ConfigureReply(request.context)

    def release(self, request: profile.ReleaseRequest) -> profile.ReleaseReply:
        self.requests.append(request)
        held = self.contexts.get(request.context)
        if held is None:
            raise UnknownContext(f"no context {request.context}")
        if request.terminations:
            terms = {self._term(t) for t in request.terminations}
        else:
            terms = set(held)
        stats = []
        for term in sorted(terms):
            if term in self.gw.terminations:
                st = self.gw.release(term)
                n = term.split("/", 1)[1]
                for name in (f"acc/{n}", f"core/{n}"):
                    stats.append(
                        profile.TerminationStatistics(
                            name, st.bytes_to_ue, st.bytes_to_core, st.packets_to_ue
                        )
                    )
            if term in held:
                held.remove(term)
            self.where.pop(term, None)
        if not held:
            del self.contexts[request.context]
        return profile.ReleaseReply(request.context, tuple(stats))

    def _event(self, event: Event) -> None:
        where = self.where.get(event.termination)
        if where is None or self.agent is None:
            return
        context, stream = where
        n = event.termination.split("/", 1)[1]
        acc, core = f"acc/{n}", f"core/{n}"
        stamp = profile.timestamp(float(self.reactor.seconds()))
        iq_event: profile.IqEvent | None = None
        if isinstance(event, TlsEstablished):
            iq_event = profile.IqEvent("tls-established", context, acc, stream, stamp)
        elif isinstance(event, TlsFailure):
            iq_event = profile.IqEvent(
                "tls-failure", context, acc, stream, stamp, cause=event.cause, peer=event.peer
            )
        elif isinstance(event, StreamFailed):
            iq_event = profile.IqEvent("stream-failed", context, acc, stream, stamp)
        elif isinstance(event, TcpFailure):
            term = core if event.side == "core" else acc
            iq_event = profile.IqEvent("tcp-failure", context, term, stream, stamp)
        elif isinstance(event, Closed):
            iq_event = profile.IqEvent("connection-closed", context, acc, stream, stamp)
        if iq_event is not None:
            self.agent.notify(iq_event).addErrback(lambda _: None)


def _identity() -> CertAndKey:
    return generate("agw", now=datetime.datetime.now(datetime.UTC))


def start(
    iq_port: int,
    reactor: Any,
    *,
    identity: CertAndKey | None = None,
    mid: str = "<agw1>",
    establishment: float = 30.0,
) -> tuple[AccessGateway, AgwHandler, IqAgent]:
    """An AccessGateway on 127.0.0.1 registered with the ALG at ``iq_port``."""
    gw = AccessGateway(
        "127.0.0.1",
        "127.0.0.1",
        identity or _identity(),
        reactor=reactor,
        timers=Timers(establishment=establishment),
    )
    handler = AgwHandler(gw, reactor)
    agent = IqAgent(handler, "127.0.0.1", iq_port, mid=mid, reactor=reactor, seed=1)
    handler.agent = agent
    agent.start()
    return gw, handler, agent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iq", type=int, required=True)
    parser.add_argument("--mid", default="<agw1>")
    parser.add_argument("--cert-dir")
    args = parser.parse_args()
    from twisted.internet import reactor

    identity = None
    if args.cert_dir:
        from pathlib import Path

        from certs.generate import write

        identity = _identity()
        write(identity, Path(args.cert_dir))
    gw, _handler, agent = start(args.iq, reactor, identity=identity, mid=args.mid)

    def ready(_: object) -> None:
        print("agw ready", flush=True)

    agent.when_registered().addCallback(ready)

    def report() -> None:
        print(f"held={len(gw.terminations)}", flush=True)

    reactor.addSystemEventTrigger("before", "shutdown", report)
    cast(Any, reactor).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
