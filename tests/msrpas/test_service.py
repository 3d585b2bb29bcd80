"""The MSRP AS on real sockets: KMS, core stub, P-CSCF, two UEs in KMS mode, the AS between
them for calls to bob (a terminating filter in the core stub). 127.0.0.1 only."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

import certs
from kms.config import KmsConfig, ProvisionedUser
from kms.service import KmsService
from kms.service import build as build_kms
from kms.store import User
from lab import ue as lab_ue
from lab.core import CoreStub
from lab.uesim import CallFailed, UeSim
from mikey import decode
from mikey.constants import DataType, IdRole
from mikey.payloads import IdWithRole
from msrpas.service import AsConfig, KmsLink, MsrpAsService, build
from pcscf.sdp import SessionDescription
from pcscf.service import SipService
from pcscf.sip.proxy import Peer, ProxyConfig

NOW = datetime.datetime.now(datetime.UTC)
DOMAIN = "lab.example"
USERS = ("alice", "bob", "carol")
AS_ID = f"sip:msrp-as@{DOMAIN}"
KMS_ID = "kms.e2ae.lab"


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


@pytest.fixture(scope="module")
def ids() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in (*USERS, "msrp-as", "kms")}


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    return {name: os.urandom(16) for name in (*USERS, "msrp-as")}


@pytest.fixture
def kms(
    tmp_path: Path, ids: dict[str, certs.CertAndKey], keys: dict[str, bytes], cleanup: list[Any]
) -> KmsService:
    users = [ProvisionedUser(User(aor(n), keys[n]), (ids[n].fingerprint(),)) for n in USERS]
    users.append(ProvisionedUser(User(AS_ID, keys["msrp-as"]), (ids["msrp-as"].fingerprint(),)))
    config = KmsConfig(
        identity=KMS_ID,
        listen=("127.0.0.1", 0),
        cert=Path("unused"),
        key=Path("unused"),
        state=tmp_path / "kms.sqlite",
        users=tuple(users),
    )
    service = build_kms(config, identity=ids["kms"], reactor=reactor)
    service.startService()
    cleanup.append(service.stopService)
    return service


@pytest.fixture
def lab(
    tmp_path: Path,
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
) -> dict[str, Any]:
    core = CoreStub(reactor, domain=DOMAIN)
    core_port = core.listen()
    cleanup.append(core.stop)
    cert, key = certs.write(ids["msrp-as"], tmp_path)
    app = build(
        AsConfig(
            sip=("127.0.0.1", 0),
            next_hop=("127.0.0.1", core_port),
            media_ip="127.0.0.1",
            identity=AS_ID,
            kms=KmsLink(kms.address, ids["kms"].fingerprint(), keys["msrp-as"], cert, key),
            setup_timeout=5.0,
        ),
        reactor=reactor,
    )
    app.startService()
    cleanup.append(app.stopService)
    core.app_server = app.address
    core.app_server_for = frozenset({aor("bob")})
    pcscf = SipService(
        ProxyConfig(
            gm=("127.0.0.1", 0),
            core=("127.0.0.1", 0),
            next_hop=Peer("core", "udp", "127.0.0.1", core_port),
            network_mechanisms=frozenset({"msrp-tls", "bfcp-tls"}),
        ),
        reactor=reactor,
    )
    pcscf.listen()
    cleanup.append(pcscf.stop)
    return {"core": core, "as": app, "gm": pcscf.config.gm, "kms": kms}


async def _ue(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    name: str,
    **access: Any,
) -> UeSim:
    kms: KmsService = lab["kms"]
    kms_access = lab_ue.KmsAccess(kms.address, ids["kms"].fingerprint(), keys[name], **access)
    sim = UeSim(reactor, name, ids[name], lab["gm"], domain=DOMAIN, kms=kms_access, media_timeout=5)
    await sim.start()
    cleanup.append(sim.stop)
    assert (await sim.register()).status == 200
    return sim


def _ids_of(sdp: bytes) -> dict[IdRole, bytes]:
    (value,) = SessionDescription.parse(sdp).key_mgmt()
    message = decode(value.data)
    return {p.role: p.data for p in message.payloads if isinstance(p, IdWithRole)}


async def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        d: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(0.05, d.callback, None)
        await d
    return bool(predicate())


@pytest_twisted.ensureDeferred
async def test_alice_calls_bob_through_the_as_tls_psk_hop_by_hop_both_ends_notified(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
) -> None:
    app: MsrpAsService = lab["as"]
    alice = await _ue(lab, cleanup, ids, keys, "alice", app_servers=(AS_ID,))
    bob = await _ue(lab, cleanup, ids, keys, "bob")
    incoming = bob.next_call()
    call = await alice.call(aor("bob"))
    answered = await incoming

    # Two dialogs: the AS is a back-to-back user agent.
    assert answered.call_id != call.call_id
    # The AS resolved alice's ticket and asked for one of its own for bob.
    assert app.kms_exchanges == ["RESOLVE_INIT_PSK", "REQUEST_INIT_PSK"]
    assert alice.kms_exchanges == ["REQUEST_INIT_PSK"]
    assert bob.kms_exchanges == ["RESOLVE_INIT_PSK"]
    # Bob's TRANSFER_INIT comes from the AS; alice's TRANSFER_RESP is the AS's.
    named = _ids_of(answered.offer)
    assert named == {IdRole.IDRI: AS_ID.encode(), IdRole.IDRR: aor("bob").encode()}
    assert _ids_of(call.answer)[IdRole.IDRR] == AS_ID.encode()
    assert decode(SessionDescription.parse(call.answer).key_mgmt()[0].data).data_type is (
        DataType.TRANSFER_RESP
    )
    # Both ends were told that TLS is terminated in the AS, and (policy accept) carried on.
    assert call.tls_terminated_by == AS_ID
    assert answered.tls_terminated_by == AS_ID
    # Each leg's TLS-PSK has its own key: alice's and bob's differ (hop by hop).
    for kind in ("msrp", "bfcp"):
        assert call.streams[kind].tls_psk and answered.streams[kind].tls_psk
    offer_text = answered.offer.decode()
    assert "a=path:msrps://127.0.0.1:" in offer_text and "msrp-as" in offer_text

    # MSRP both ways through the AS's relay, re-addressed per leg; BFCP floor granted.
    await call.msrp.send_message(b"hello bob, via the AS")
    got = await answered.msrp.wait_messages(1)
    assert [m.body for m in got] == [b"hello bob, via the AS"]
    await answered.msrp.send_message(b"hi alice")
    assert [m.body for m in await call.msrp.wait_messages(1)] == [b"hi alice"]
    big = os.urandom(5000).hex().encode()  # chunked by the sender, reassembled by bob
    await call.msrp.send_message(big)
    assert (await answered.msrp.wait_messages(2))[-1].body == big
    assert (await call.bfcp.request_floor(1)).floor_ids == (1,)

    assert (await alice.hangup(call)).status == 200
    assert await _wait(lambda: answered.ended)
    assert await _wait(lambda: not app.calls)
    relayed = {r["stream"]: r for r in app.relayed}
    assert relayed["msrp"]["caller"] > len(big) and relayed["msrp"]["callee"] > 0
    assert relayed["bfcp"]["caller"] > 0 and relayed["bfcp"]["callee"] > 0


@pytest_twisted.ensureDeferred
async def test_a_caller_whose_policy_is_close_ends_the_call_when_the_as_answers(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
) -> None:
    app: MsrpAsService = lab["as"]
    alice = await _ue(lab, cleanup, ids, keys, "alice", app_servers=(AS_ID,), as_policy="close")
    bob = await _ue(lab, cleanup, ids, keys, "bob")
    with pytest.raises(CallFailed, match=f"terminated in the AS {AS_ID}: closed by policy"):
        await alice.call(aor("bob"))
    # alice's BYE went through the AS to bob: nothing is left anywhere.
    assert await _wait(lambda: not app.calls)
    assert await _wait(lambda: all(c.ended for c in bob.calls.values()))


@pytest_twisted.ensureDeferred
async def test_a_callee_whose_policy_is_close_answers_488_and_the_as_passes_it_on(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
) -> None:
    app: MsrpAsService = lab["as"]
    alice = await _ue(lab, cleanup, ids, keys, "alice", app_servers=(AS_ID,))
    await _ue(lab, cleanup, ids, keys, "bob", as_policy="close")
    with pytest.raises(CallFailed) as info:
        await alice.call(aor("bob"))
    assert info.value.status == 488
    assert f"TLS would be terminated in {AS_ID}" in str(info.value)
    assert await _wait(lambda: not app.calls)


@pytest_twisted.ensureDeferred
async def test_a_ticket_the_as_may_not_resolve_gets_488_auth_failure_from_the_as(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
) -> None:
    app: MsrpAsService = lab["as"]
    alice = await _ue(lab, cleanup, ids, keys, "alice")  # no AS among her ticket's Responders
    bob = await _ue(lab, cleanup, ids, keys, "bob")
    with pytest.raises(CallFailed) as info:
        await alice.call(aor("bob"))
    assert info.value.status == 488 and "AUTH_FAILURE" in str(info.value)
    assert app.kms_exchanges == ["RESOLVE_INIT_PSK"]
    assert bob.kms_exchanges == [] and not bob.calls
    assert await _wait(lambda: not app.calls)


@pytest_twisted.ensureDeferred
async def test_calls_to_others_do_not_go_through_the_as(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
) -> None:
    app: MsrpAsService = lab["as"]
    alice = await _ue(lab, cleanup, ids, keys, "alice", app_servers=(AS_ID,))
    carol = await _ue(lab, cleanup, ids, keys, "carol")
    incoming = carol.next_call()
    call = await alice.call(aor("carol"))
    answered = await incoming
    assert answered.call_id == call.call_id and call.tls_terminated_by is None
    assert app.kms_exchanges == []
    await alice.hangup(call)


def _raw(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


INVITE = """INVITE sip:bob@lab.example SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}
Max-Forwards: 70
From: <sip:alice@lab.example>;tag=a1
To: <sip:bob@lab.example>
Call-ID: {call_id}
CSeq: 1 {method}
Content-Type: application/sdp
Content-Length: {length}

{body}"""


async def _exchange(app: MsrpAsService, data: Any, want: int) -> list[bytes]:
    """Send ``data`` (bytes, or a function of our port giving them) to the AS from a fresh
    UDP socket; what came back once ``want`` datagrams did (or 3 s passed)."""
    from twisted.internet.protocol import DatagramProtocol

    got: list[bytes] = []

    class Catch(DatagramProtocol):
        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            got.append(datagram)

    port = reactor.listenUDP(0, Catch(), interface="127.0.0.1")
    try:
        port.write(data if isinstance(data, bytes) else data(port.getHost().port), app.address)
        await _wait(lambda: len(got) >= want, timeout=3.0)
    finally:
        await defer.maybeDeferred(port.stopListening)
    return got


def _message(method: str, body: str = "", call_id: str = "raw@test", port: int = 9) -> bytes:
    sdp = body.replace("\n", "\r\n")
    return (
        _raw(
            INVITE.format(
                port=port,
                branch=os.urandom(4).hex(),
                call_id=call_id,
                method=method,
                length=len(sdp.encode()),
                body="",
            ).replace("INVITE sip:", f"{method} sip:", 1)
        )
        + sdp.encode()
    )


@pytest_twisted.ensureDeferred
async def test_bad_input_gets_a_sip_error_and_the_as_carries_on(lab: dict[str, Any]) -> None:
    app: MsrpAsService = lab["as"]
    # not SIP at all: dropped, nothing sent back, the AS still answers afterwards
    assert await _exchange(app, b"\x00\x01 not sip", 1) == []
    # another method outside a dialog: 405 with Allow
    (reply,) = await _exchange(app, lambda n: _message("OPTIONS", port=n), 1)
    assert reply.startswith(b"SIP/2.0 405 ") and b"Allow: INVITE, ACK, BYE, CANCEL" in reply
    # an INVITE without a keyed TLS stream: 100, then 488 with a Warning
    plain = (
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"
    )
    replies = await _exchange(
        app, lambda n: _message("INVITE", plain, call_id="plain@test", port=n), 2
    )
    assert replies[0].startswith(b"SIP/2.0 100 ")
    assert replies[1].startswith(b"SIP/2.0 488 ")
    assert b'Warning: 399 msrp-as "UNSPECIFIED: SDP: no TCP/TLS/MSRP' in replies[1]
    # the same INVITE again (its 488 lost): the same 488, no second setup
    again = await _exchange(
        app, lambda n: _message("INVITE", plain, call_id="plain@test", port=n), 1
    )
    assert again[0].startswith(b"SIP/2.0 488 ") and len(app.relayed) == 0
    # a BYE for no call: 481
    (reply,) = await _exchange(app, lambda n: _message("BYE", call_id="nobody@test", port=n), 1)
    assert reply.startswith(b"SIP/2.0 481 ")
    assert not app.calls and app.kms_exchanges == []


@pytest_twisted.ensureDeferred
async def test_an_as_at_its_call_limit_answers_503(
    kms: KmsService, ids: dict[str, certs.CertAndKey], keys: dict[str, bytes], tmp_path: Path
) -> None:
    cert, key = certs.write(ids["msrp-as"], tmp_path / "full")
    app = build(
        AsConfig(
            sip=("127.0.0.1", 0),
            next_hop=("127.0.0.1", 9),
            media_ip="127.0.0.1",
            identity=AS_ID,
            kms=KmsLink(kms.address, ids["kms"].fingerprint(), keys["msrp-as"], cert, key),
            max_calls=0,
        ),
        reactor=reactor,
    )
    app.startService()
    try:
        (reply,) = await _exchange(
            app, lambda n: _message("INVITE", "v=0\n", call_id="full@test", port=n), 1
        )
        assert reply.startswith(b"SIP/2.0 503 ") and b"Retry-After: 5" in reply
    finally:
        await defer.maybeDeferred(app.stopService)


@pytest_twisted.ensureDeferred
async def test_a_wrong_psk_at_the_as_gets_nothing_and_the_caller_still_gets_in(
    lab: dict[str, Any],
    cleanup: list[Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
) -> None:
    from lab import media

    alice = await _ue(lab, cleanup, ids, keys, "alice", app_servers=(AS_ID,))
    bob = await _ue(lab, cleanup, ids, keys, "bob")
    refused: list[str] = []

    async def stranger_first(call: Any) -> None:
        # between the AS's answer and alice's connection: TLS-PSK at the AS's MSRP port of
        # alice's leg with a key of the stranger's own choosing
        (msrp_leg,) = [
            s for s in lab_ue.streams_of(call.answer, from_offerer=False) if s.media == "message"
        ]
        stranger = media.msrp_endpoint(
            reactor, local_uri="msrps://127.0.0.1:9/x;tcp", tls=media.UePsk(os.urandom(32))
        )
        try:
            await stranger.connect("127.0.0.1", msrp_leg.port, timeout=5)
        except Exception as exc:
            refused.append(str(exc))
        finally:
            await stranger.stop()

    incoming = bob.next_call()
    call = await alice.call(aor("bob"), before_media=stranger_first)
    answered = await incoming
    assert refused and "TLS-PSK handshake failed" in refused[0]
    await call.msrp.send_message(b"still private")
    assert [m.body for m in await answered.msrp.wait_messages(1)] == [b"still private"]
    assert lab["as"].relayed == []  # the stranger ended no call: this one is still up
    await alice.hangup(call)
