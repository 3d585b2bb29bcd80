"""The AGW's Iq handler in process: a real IqController (the ALG end) and IqAgent over loopback,
driving a real AccessGateway; openssl s_server as the UE where the AGW is TLS client."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from accessgw.gateway import AccessGateway
from accessgw.iqhandler import GatewayIqHandler
from accessgw.ports import PortRange
from accessgw.termination import Timers
from iq import profile
from iq.errors import RequestFailed
from iq.link import IqAgent, IqController, IqNotification
from tests.agw_helpers import SinkFactory, identity, spawn, wait_for
from tests.conftest import plain_iq, require_tool

MID = "<agw-iq.e2ae.lab>"


class IqLab:
    def __init__(self, tmp: Path, **kw: Any) -> None:
        self.agw, _ = identity("agw", tmp)
        self.ue, self.ue_path = identity("ue", tmp)
        self.events: list[Any] = []
        self.ctrl = IqController(**plain_iq(MID))
        self.ctrl.subscribe(self.events.append)
        self.port = self.ctrl.listen(0, "127.0.0.1")
        self.gw = AccessGateway("127.0.0.1", "127.0.0.1", self.agw, **kw)
        self.handler = GatewayIqHandler(self.gw)
        self.agent = IqAgent(self.handler, "127.0.0.1", self.port.getHost().port, mid=MID, seed=1)
        self.handler.attach(self.agent)
        self.agent.start()

    def notes(self) -> list[profile.IqEvent]:
        return [e.event for e in self.events if isinstance(e, IqNotification)]

    async def close(self) -> None:
        self.gw.close()
        await self.agent.stop()
        await defer.maybeDeferred(self.port.stopListening)
        self.ctrl.stop()


def _reserve(
    access_setup: profile.Setup, core_setup: profile.Setup, **kw: Any
) -> profile.ReserveRequest:
    return profile.ReserveRequest(
        call_id="call@iq",
        streams=(
            profile.StreamReservation(
                stream=1, media="message", access_setup=access_setup, core_setup=core_setup, **kw
            ),
        ),
    )


@pytest_twisted.ensureDeferred
async def test_port_range_exhausted_is_h248_510(tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    lab = IqLab(tmp_path, ports=PortRange(port, port))
    try:
        await lab.agent.when_registered()
        first = await lab.ctrl.reserve(MID, _reserve("passive", "active"))
        assert first.streams[0].access.port == port
        with pytest.raises(RequestFailed) as info:
            await lab.ctrl.reserve(MID, _reserve("passive", "active"))
        assert info.value.code == 510
        # Nothing of the failed reservation is left behind.
        assert lab.gw.terminations == [first.streams[0].access_termination]
        with pytest.raises(RequestFailed) as unknown:
            await lab.ctrl.release(MID, profile.ReleaseRequest(first.context, ("acc/9/9",)))
        assert unknown.value.code == 430
    finally:
        await lab.close()


@pytest_twisted.ensureDeferred
async def test_agw_tls_client_on_establish_signal_and_stream_failure(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    lab = IqLab(tmp_path, timers=Timers(establishment=20))
    ue = spawn(
        [openssl, "s_server", "-accept", "127.0.0.1:0", "-cert", f"{lab.ue_path}.crt",
         "-key", f"{lab.ue_path}.key", "-naccept", "1"]
    )  # fmt: skip
    try:
        await wait_for(lambda: b"ACCEPT" in ue.out)
        match = re.search(rb"ACCEPT 127\.0\.0\.1:(\d+)", bytes(ue.out))
        assert match is not None
        await lab.agent.when_registered()
        reply = await lab.ctrl.reserve(MID, _reserve("active", "passive"))
        [stream] = reply.streams
        assert stream.access_setup == "active" and stream.core_setup == "passive"
        assert stream.access.port == 9  # the AGW connects out (RFC 4145 discard port)
        core = SinkFactory()
        from twisted.internet import reactor

        reactor.connectTCP("127.0.0.1", stream.core.port, core)  # type: ignore[attr-defined]
        await lab.ctrl.configure(
            MID,
            profile.ConfigureRequest(
                reply.context,
                (
                    profile.StreamConfiguration(
                        stream=1,
                        media="message",
                        access_termination=stream.access_termination,
                        core_termination="",
                        ue_address=profile.Endpoint("127.0.0.1", int(match.group(1))),
                        ue_setup="passive",
                        ue_fingerprints=(lab.ue.fingerprint("sha-512"),),
                        establish_tls=True,
                    ),
                ),
            ),
        )
        await wait_for(lambda: any(n.kind == "tls-established" for n in lab.notes()))
        ue.send(b"over-iq\n")
        await wait_for(lambda: core.received == b"over-iq\n")
        released = await lab.ctrl.release(
            MID, profile.ReleaseRequest(reply.context, (stream.access_termination,))
        )
        [acc] = released.statistics
        assert acc.tls == "established" and acc.octets_received == len(b"over-iq\n")
    finally:
        ue.kill()
        await ue.ended
        await lab.close()


@pytest_twisted.ensureDeferred
async def test_stream_failed_notify_when_no_ue_comes(tmp_path: Path) -> None:
    lab = IqLab(tmp_path, timers=Timers(establishment=0.3))
    try:
        await lab.agent.when_registered()
        reply = await lab.ctrl.reserve(
            MID, _reserve("passive", "active", ue_fingerprints=(lab.ue.fingerprint(),))
        )
        [stream] = reply.streams
        await lab.ctrl.configure(
            MID,
            profile.ConfigureRequest(
                reply.context,
                (
                    profile.StreamConfiguration(
                        stream=1,
                        media="message",
                        access_termination="",
                        core_termination=stream.core_termination,
                        core_address=profile.Endpoint("127.0.0.1", 9),
                    ),
                ),
            ),
        )
        await wait_for(lambda: any(n.kind == "stream-failed" for n in lab.notes()))
        [note] = [n for n in lab.notes() if n.kind == "stream-failed"]
        assert note.termination == stream.access_termination and note.stream == 1
        released = await lab.ctrl.release(MID, profile.ReleaseRequest(reply.context))
        tls = {s.termination: s.tls for s in released.statistics}
        assert tls[stream.access_termination] == "failed"
    finally:
        await lab.close()


def test_release_of_a_context_takes_its_streams_only(tmp_path: Path) -> None:
    from iq.errors import UnknownContext

    agw, _ = identity("agw", tmp_path)
    gw = AccessGateway("127.0.0.1", "127.0.0.1", agw)
    handler = GatewayIqHandler(gw)
    try:
        first = handler.reserve(_reserve("passive", "active"))
        second = handler.reserve(_reserve("passive", "active"))
        two = profile.ReserveRequest(
            call_id="call@iq",
            context=first.context,
            streams=(
                profile.StreamReservation(
                    stream=2, media="message", access_setup="passive", core_setup="active"
                ),
            ),
        )
        handler.reserve(two)  # a second stream in the first context
        released = handler.release(profile.ReleaseRequest(first.context))
        assert [s.termination for s in released.statistics] == [
            f"{profile.ACCESS_PREFIX}{first.context}/1",
            f"{profile.CORE_PREFIX}{first.context}/1",
            f"{profile.ACCESS_PREFIX}{first.context}/2",
            f"{profile.CORE_PREFIX}{first.context}/2",
        ]
        with pytest.raises(UnknownContext):
            handler.release(profile.ReleaseRequest(first.context))
        with pytest.raises(UnknownContext):
            handler.reserve(two)  # the context is gone
        assert len(handler.release(profile.ReleaseRequest(second.context)).statistics) == 2
    finally:
        gw.close()
