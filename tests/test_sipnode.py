"""The UE simulator and the core stub as Twisted nodes on loopback: two UEs register with the
core stub, call each other through it, exchange MSRP over TLS (each pinning the other's
fingerprint from the SDP) and a BFCP floor grant, and hang up."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

import certs
from lab.media import PeerNotVerified
from lab.sipnode import CoreService, UeSimulator
from tests.conftest import run_e2ae

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def ids() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in ("alice", "bob")}


@pytest_twisted.ensureDeferred
async def test_two_ues_call_through_the_core_stub(ids: dict[str, certs.CertAndKey]) -> None:
    core = CoreService(reactor)
    alice = UeSimulator(
        reactor, aor="sip:alice@ims.test", identity=ids["alice"], proxy=core.address
    )
    bob = UeSimulator(reactor, aor="sip:bob@ims.test", identity=ids["bob"], proxy=core.address)
    stops: list[Any] = [alice.stop, bob.stop]
    try:
        assert (await alice.register()).status == 200
        assert (await bob.register()).status == 200
        answered = bob.next_call()
        call = await alice.call("sip:bob@ims.test")
        callee = await answered
        assert call.msrp is not None and callee.msrp is not None
        assert call.msrp.peer_fingerprint == ids["bob"].fingerprint()
        assert callee.msrp.peer_fingerprint == ids["alice"].fingerprint()
        await call.msrp.send_message(b"hi bob")
        await callee.msrp.send_message(b"hi alice")
        assert (await callee.msrp.wait_messages(1))[0].body == b"hi bob"
        assert (await call.msrp.wait_messages(1))[0].body == b"hi alice"
        assert call.bfcp_client is not None and callee.bfcp_server is not None
        await call.bfcp_client.hello()
        grant = await call.bfcp_client.request_floor(1)
        assert grant.floor_ids == (1,)
        bye = await alice.hangup(call)
        assert bye.status == 200 and callee.dialog.state == "terminated"
    finally:
        for stop in stops:
            await stop()
        await core.stop()


@pytest_twisted.ensureDeferred
async def test_caller_refuses_a_callee_presenting_another_certificate(
    ids: dict[str, certs.CertAndKey],
) -> None:
    core = CoreService(reactor)
    alice = UeSimulator(
        reactor, aor="sip:alice@ims.test", identity=ids["alice"], proxy=core.address
    )
    bob = UeSimulator(
        reactor, aor="sip:bob@ims.test", identity=ids["bob"], proxy=core.address, present="other"
    )
    try:
        await alice.register()
        await bob.register()
        with pytest.raises(PeerNotVerified, match="does not match"):
            await alice.call("sip:bob@ims.test", bfcp=False)
        [endpoint] = alice.calls[0].endpoints
        assert endpoint.bytes_sent == 0 and endpoint.bytes_received == 0
    finally:
        await alice.stop()
        await bob.stop()
        await core.stop()


@pytest.mark.parametrize("present", ["own", "other"])
@pytest_twisted.ensureDeferred
async def test_e2ae_ue_command_calls_a_ue_and_sends_messages(
    present: str, ids: dict[str, certs.CertAndKey]
) -> None:
    core = CoreService(reactor)
    bob = UeSimulator(reactor, aor="sip:bob@ims.test", identity=ids["bob"], proxy=core.address)
    try:
        await bob.register()
        answered = bob.next_call()
        host, port = core.address
        args = ["ue", "--aor", "sip:alice@ims.test", "--proxy", f"{host}:{port}"]
        args += ["--call", "sip:bob@ims.test", "--message", "hello", "--message", "world"]
        args += ["--floor", "1", "--json", "--timeout", "15", "--present", present]
        result = await threads.deferToThread(run_e2ae, args)
        summary = json.loads(result.stdout)
        if present == "other":
            # bob refuses a caller whose certificate is not the one in its SDP offer
            assert result.returncode == 1 and summary["ok"] is False, result.stderr
            assert summary["register"] == 200
            assert all(not c.msrp or not c.msrp.received for c in bob.calls)
            return
        assert result.returncode == 0, result.stderr
        assert summary["ok"] is True and summary["register"] == 200
        assert summary["call"]["floor_granted"] == [1] and summary["call"]["bye"] == 200
        assert summary["call"]["msrp_peer_fingerprint"] == ids["bob"].fingerprint().value
        call = await answered
        assert call.msrp is not None
        assert [m.body for m in call.msrp.received] == [b"hello", b"world"]
        assert call.msrp.peer_fingerprint is not None
        assert call.msrp.peer_fingerprint.value == summary["fingerprint"]
    finally:
        await bob.stop()
        await core.stop()
