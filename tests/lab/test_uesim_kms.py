"""UE-to-UE calls protected end to end with keys from the KMS (TS 33.328 Annex H, TR 33.829
section 8.3.1.2), on real loopback sockets: an in-process KMS over HTTPS with three users, the
real P-CSCF proxy and UeSims in KMS mode. The caller's ticket request and TRANSFER_INIT, the
callee's resolve and TRANSFER_RESP, MSRP and BFCP over TLS-PSK with the keys of each crypto
session; an offer for someone else, a TRANSFER_INIT or TRANSFER_RESP altered on the way, a
ticket the KMS will not resolve for the callee: each refused, and no key learnt."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.internet.protocol import DatagramProtocol

import certs
import lab.ue as lab_ue
from certs.psk import ALLOWED_PSK_CIPHERS
from kms import client as kms_client
from kms.cli import post as kms_post
from kms.config import KmsConfig, ProvisionedUser
from kms.service import KmsService, build
from kms.store import User
from lab.core import CoreStub
from lab.media import UePsk
from lab.uesim import CallFailed, UeSim
from mikey import decode, transfer
from mikey.constants import DataType, ErrorNo, IdRole
from mikey.errors import MikeyError
from mikey.payloads import IdWithRole
from pcscf.policy import Policy
from pcscf.rewrite import plan_offer
from pcscf.sdp import SessionDescription
from pcscf.service import SipService
from pcscf.sip import Request, Response, parse_datagram
from pcscf.sip.proxy import Peer, ProxyConfig
from tests.conftest import REPO, e2ae_command, run_e2ae

NOW = datetime.datetime.now(datetime.UTC)
DOMAIN = "lab.example"
USERS = ("alice", "bob", "carol")
KMS_ID = "kms.e2ae.lab"


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


@pytest.fixture(scope="module")
def ids() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in (*USERS, "kms")}


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    return {name: os.urandom(16) for name in USERS}


@pytest.fixture
def kms(
    tmp_path: Path,
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    cleanup: list[Any],
) -> KmsService:
    config = KmsConfig(
        identity=KMS_ID,
        listen=("127.0.0.1", 0),
        cert=Path("unused"),
        key=Path("unused"),
        state=tmp_path / "kms.sqlite",
        users=tuple(ProvisionedUser(User(aor(n), keys[n]), (ids[n].fingerprint(),)) for n in USERS),
    )
    service = build(config, identity=ids["kms"], reactor=reactor)
    service.startService()
    cleanup.append(service.stopService)
    return service


def _pcscf(cleanup: list[Any]) -> tuple[CoreStub, tuple[str, int]]:
    core = CoreStub(reactor, domain=DOMAIN)
    port = core.listen()
    cleanup.append(core.stop)
    service = SipService(
        ProxyConfig(
            gm=("127.0.0.1", 0),
            core=("127.0.0.1", 0),
            next_hop=Peer("core", "udp", "127.0.0.1", port),
            network_mechanisms=frozenset({"msrp-tls", "bfcp-tls"}),
        ),
        reactor=reactor,
    )
    service.listen()
    cleanup.append(service.stop)
    return core, service.config.gm


def _access(
    kms: KmsService, ids: dict[str, certs.CertAndKey], keys: dict[str, bytes], name: str, **kw: Any
) -> lab_ue.KmsAccess:
    values: dict[str, Any] = {"pin": ids["kms"].fingerprint(), "key": keys[name], **kw}
    return lab_ue.KmsAccess(kms.address, **values)


async def _ue(
    cleanup: list[Any],
    name: str,
    ids: dict[str, certs.CertAndKey],
    gm: tuple[str, int],
    access: lab_ue.KmsAccess | None,
    **kw: Any,
) -> UeSim:
    sim = UeSim(reactor, name, ids[name], gm, domain=DOMAIN, kms=access, media_timeout=5, **kw)
    await sim.start()
    cleanup.append(sim.stop)
    assert (await sim.register()).status == 200
    return sim


def _mikey_of(sdp: bytes) -> Any:
    (value,) = SessionDescription.parse(sdp).key_mgmt()
    assert value.protocol == "mikey"
    return decode(value.data)


# ---------------------------------------------------------------------------------------------
# a call


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest_twisted.ensureDeferred
async def test_alice_calls_bob_with_keys_from_the_kms_msrp_both_ways_and_floor(
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
    transport: str,
) -> None:
    core, gm = _pcscf(cleanup)
    alice = await _ue(
        cleanup, "alice", ids, gm, _access(kms, ids, keys, "alice"), transport=transport
    )
    bob = await _ue(cleanup, "bob", ids, gm, _access(kms, ids, keys, "bob"))

    incoming = bob.next_call()
    call = await alice.call(aor("bob"))
    answered = await incoming
    assert answered.call_id == call.call_id
    assert alice.kms_exchanges == ["REQUEST_INIT_PSK"]
    assert bob.kms_exchanges == ["RESOLVE_INIT_PSK"]
    assert kms.requests == 2

    # The offer: TLS streams keyed by the session-level TRANSFER_INIT, no fingerprint, no e2ae.
    offer = call.offer.decode()
    assert re.search(r"(?m)^m=message 9 TCP/TLS/MSRP \*\r$", offer)
    assert re.search(r"(?m)^m=application 9 TCP/TLS/BFCP \*\r$", offer)
    assert "a=fingerprint" not in offer and "a=3ge2ae" not in offer
    assert offer.index("a=key-mgmt:mikey ") < offer.index("m=message")
    init = _mikey_of(call.offer)
    assert init.data_type is DataType.TRANSFER_INIT
    named = {p.role: p.data for p in init.payloads if isinstance(p, IdWithRole)}
    assert named == {IdRole.IDRI: aor("alice").encode(), IdRole.IDRR: aor("bob").encode()}
    assert [e.spi for e in init.header.cs_map.entries] == [
        kms_client.tgk_spi(1),
        kms_client.tgk_spi(2),
    ]
    resp = _mikey_of(call.answer)
    assert resp.data_type is DataType.TRANSFER_RESP
    assert "a=fingerprint" not in call.answer.decode()

    # The P-CSCF classed both streams end to end and passed offer and answer byte for byte.
    plan = plan_offer(
        "orig-offer", SessionDescription.parse(call.offer), ("msrp-tls", "bfcp-tls"), Policy()
    )
    assert [s.treatment for s in plan.streams] == ["e2e", "e2e"]
    assert answered.offer == call.offer
    assert call.answer == answered.answer
    assert core.routed[-1].protos == ("TCP/TLS/MSRP", "TCP/TLS/BFCP")

    # Every stream runs TLS-PSK with the key of its crypto session, the same at both ends.
    for side in (call, answered):
        for kind, cs_id in (("msrp", 1), ("bfcp", 2)):
            leg = side.streams[kind]
            assert leg.tls_psk and leg.action.cs_id == cs_id
            assert leg.verified_fingerprint is None
            handle = leg.connection.transport.getHandle()
            assert handle.get_protocol_version_name() == "TLSv1.2"
            assert handle.get_cipher_name() in ALLOWED_PSK_CIPHERS
    for kind in ("msrp", "bfcp"):
        mine, theirs = call.streams[kind].endpoint.tls, answered.streams[kind].endpoint.tls
        assert isinstance(mine, UePsk) and isinstance(theirs, UePsk)
        assert mine.psk == theirs.psk and len(mine.psk) == transfer.TLS_PSK_BYTES
    assert call.streams["msrp"].endpoint.tls.psk != call.streams["bfcp"].endpoint.tls.psk

    await call.msrp.send_message(b"hello bob")
    assert [m.body for m in await answered.msrp.wait_messages(1)] == [b"hello bob"]
    await answered.msrp.send_message(b"hi alice")
    assert [m.body for m in await call.msrp.wait_messages(1)] == [b"hi alice"]
    grant = await call.bfcp.request_floor(1)
    assert grant.floor_ids == (1,)

    assert (await alice.hangup(call)).status == 200
    await answered.when_ended()
    assert answered.end_reason == "remote hung up"


@pytest_twisted.ensureDeferred
async def test_a_kms_call_through_a_pcscf_with_an_agw_leaves_the_agw_out(
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
    tmp_path: Path,
) -> None:
    """The P-CSCF with the e2ae media handler and an AGW in service over Iq: a certificate call
    asking for e2ae gets AGW terminations, a KMS call none (its streams are e2e)."""
    from accessgw.config import AgwConfig
    from accessgw.service import build as build_agw
    from pcscf.config import PcscfConfig
    from pcscf.service import build as build_pcscf

    core = CoreStub(reactor, domain=DOMAIN)
    core_port = core.listen()
    cleanup.append(core.stop)
    mid = "<agw-kms.e2ae.lab>"
    pcscf = build_pcscf(
        PcscfConfig(
            gm=("127.0.0.1", 0),
            core=("127.0.0.1", 0),
            next_hop=("127.0.0.1", core_port),
            iq=("127.0.0.1", 0),
            iq_insecure=True,
            iq_allow=(f"{mid}@127.0.0.1",),
        ),
        reactor=reactor,
    )
    pcscf.startService()
    cleanup.append(pcscf.stopService)
    agw_cert, agw_key = certs.write(certs.generate("agw", now=NOW), tmp_path / "agw")
    agw = build_agw(
        AgwConfig(
            alg=pcscf.iq,
            access_ip="127.0.0.1",
            core_ip="127.0.0.1",
            cert=agw_cert,
            key=agw_key,
            mid=mid,
            malloc_tuning=False,
        ),
        iq_tls=None,
        reactor=reactor,
    )
    agw.startService()
    cleanup.append(agw.stopService)
    await agw.when_registered().addTimeout(10, reactor)
    gm = pcscf.gm

    # a certificate call asking for e2ae: the AGW terminates both streams
    dave = await _ue(cleanup, "alice", ids, gm, None)
    erin = await _ue(cleanup, "bob", ids, gm, None)
    incoming = erin.next_call()
    plain = await dave.call(aor("bob"))
    await incoming
    assert len(agw.gateway.terminations) == 4
    assert all(leg.action.e2ae_applied for leg in plain.streams.values())
    await dave.hangup(plain)
    await dave.stop()
    await erin.stop()

    alice = await _ue(cleanup, "alice", ids, gm, _access(kms, ids, keys, "alice"))
    bob = await _ue(cleanup, "bob", ids, gm, _access(kms, ids, keys, "bob"))
    incoming = bob.next_call()
    call = await alice.call(aor("bob"))
    answered = await incoming
    assert agw.gateway.terminations == []
    assert answered.offer == call.offer and call.answer == answered.answer
    assert all(leg.tls_psk and not leg.action.e2ae_applied for leg in call.streams.values())
    await call.msrp.send_message(b"past the AGW")
    assert [m.body for m in await answered.msrp.wait_messages(1)] == [b"past the AGW"]
    assert (await call.bfcp.request_floor(1)).floor_ids == (1,)
    assert (await alice.hangup(call)).status == 200


@pytest_twisted.ensureDeferred
async def test_a_ue_without_the_kms_refuses_a_keyed_offer(
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
) -> None:
    _, gm = _pcscf(cleanup)
    alice = await _ue(cleanup, "alice", ids, gm, _access(kms, ids, keys, "alice"))
    bob = await _ue(cleanup, "bob", ids, gm, None)
    with pytest.raises(CallFailed) as info:
        await alice.call(aor("bob"))
    assert info.value.status == 488
    assert bob.kms_exchanges == [] and bob.calls == {}


# ---------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"key": bytes(16)}, "KMS: AUTH_FAILURE: the KMS refused: AUTH_FAILURE"),
        ({"pin": "bob"}, "KMS: UNSPECIFIED: the KMS at 127.0.0.1:"),  # then: not the pinned
    ],
)
@pytest_twisted.ensureDeferred
async def test_no_ticket_no_invite(
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
    change: dict[str, Any],
    words: str,
) -> None:
    """A ticket request the KMS refuses (another key), or a KMS that is not the pinned one:
    the call fails before any INVITE is sent."""
    core, gm = _pcscf(cleanup)
    if "pin" in change:
        change = {"pin": ids[change["pin"]].fingerprint()}
    alice = await _ue(cleanup, "alice", ids, gm, _access(kms, ids, keys, "alice", **change))
    routed = len(core.routed)
    with pytest.raises(CallFailed) as info:
        await alice.call(aor("bob"))
    assert str(info.value).startswith(words), str(info.value)
    if "pin" in change:
        assert "is not the pinned" in str(info.value)
    assert info.value.status is None and alice.calls == {}
    assert len(core.routed) == routed


def _warning(failure: CallFailed) -> str:
    found = re.search(r'\(399 127\.0\.0\.1 "([^"]*)"\)$', str(failure))
    assert found, str(failure)
    return found.group(1)


@pytest_twisted.ensureDeferred
async def test_an_offer_for_bob_that_reaches_carol_gets_488_and_carol_learns_no_key(
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
) -> None:
    _, gm = _pcscf(cleanup)
    # alice's ticket and TRANSFER_INIT name bob, her INVITE goes to carol
    access = _access(kms, ids, keys, "alice", responder=aor("bob"))
    alice = await _ue(cleanup, "alice", ids, gm, access)
    carol = await _ue(cleanup, "carol", ids, gm, _access(kms, ids, keys, "carol"))
    with pytest.raises(CallFailed) as info:
        await alice.call(aor("carol"))
    assert info.value.status == 488
    assert _warning(info.value) == f"INVALID_ID: the TRANSFER_INIT is for {aor('bob')}"
    assert alice.kms_exchanges == ["REQUEST_INIT_PSK"]
    assert carol.kms_exchanges == []  # refused before any resolve: no MPK, no TGK
    assert carol.calls == {}


class Hop(DatagramProtocol):
    """A UDP hop between a UE and the P-CSCF that passes every datagram through ``change``."""

    def __init__(self, target: tuple[str, int], change: Callable[[bytes], bytes]) -> None:
        self.target = target
        self.change = change
        self.ue: tuple[str, int] | None = None
        self.changed = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if tuple(addr) != self.target:
            self.ue = tuple(addr)
            dest: tuple[str, int] | None = self.target
        else:
            dest = self.ue
        if dest is None:
            return
        out = self.change(data)
        self.changed += out != data
        self.transport.write(out, dest)


def _flip_mac(first_line: bytes) -> Callable[[bytes], bytes]:
    """Flip the last bit of the MIKEY message (its MAC) in the a=key-mgmt of datagrams that
    start with ``first_line``; the base64 keeps its length, and so the Content-Length."""

    def change(data: bytes) -> bytes:
        if not data.startswith(first_line) or b"CSeq: 1 INVITE" not in data:
            return data
        found = re.search(rb"a=key-mgmt:mikey ([A-Za-z0-9+/=]+)", data)
        if found is None:
            return data
        raw = bytearray(base64.b64decode(found.group(1)))
        raw[-1] ^= 0x01
        new = base64.b64encode(bytes(raw))
        assert len(new) == len(found.group(1))
        return data[: found.start(1)] + new + data[found.end(1) :]

    return change


async def _via_hop(
    cleanup: list[Any], gm: tuple[str, int], change: Callable[[bytes], bytes]
) -> tuple[Hop, tuple[str, int]]:
    hop = Hop(gm, change)
    port = reactor.listenUDP(0, hop, interface="127.0.0.1")  # type: ignore[attr-defined]
    cleanup.append(port.stopListening)
    return hop, ("127.0.0.1", port.getHost().port)


@pytest_twisted.ensureDeferred
async def test_a_tampered_transfer_init_gets_488(
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
) -> None:
    _, gm = _pcscf(cleanup)
    hop, hop_addr = await _via_hop(cleanup, gm, _flip_mac(b"INVITE "))
    alice = await _ue(cleanup, "alice", ids, hop_addr, _access(kms, ids, keys, "alice"))
    bob = await _ue(cleanup, "bob", ids, gm, _access(kms, ids, keys, "bob"))
    with pytest.raises(CallFailed) as info:
        await alice.call(aor("bob"))
    assert hop.changed >= 1
    assert info.value.status == 488
    assert _warning(info.value) == "AUTH_FAILURE: the V MAC does not verify"
    # bob resolved the ticket (the MAC is checked with the MPK), then refused: no call
    assert bob.kms_exchanges == ["RESOLVE_INIT_PSK"]
    assert bob.calls == {}


@pytest_twisted.ensureDeferred
async def test_a_tampered_transfer_resp_makes_the_caller_hang_up(
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
) -> None:
    _, gm = _pcscf(cleanup)
    hop, hop_addr = await _via_hop(cleanup, gm, _flip_mac(b"SIP/2.0 200 "))
    alice = await _ue(cleanup, "alice", ids, hop_addr, _access(kms, ids, keys, "alice"))
    bob = await _ue(cleanup, "bob", ids, gm, _access(kms, ids, keys, "bob"))
    with pytest.raises(CallFailed) as info:
        await alice.call(aor("bob"))
    assert hop.changed >= 1
    assert str(info.value) == (
        f"call {info.value.call_id}: TRANSFER_RESP refused: AUTH_FAILURE: the V MAC does not verify"
    )
    ended = alice.calls[info.value.call_id]
    assert ended.ended and ended.end_reason == "hung up"
    assert all(leg.connection is None for leg in ended.streams.values())
    callee = bob.calls[info.value.call_id]
    await callee.when_ended().addTimeout(5, reactor)
    assert callee.end_reason == "remote hung up"
    assert all(leg.connection is None for leg in callee.streams.values())


class FakeProxy(DatagramProtocol):
    """The test as carol's P-CSCF: sends datagrams to the UE, keeps what comes back."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.got.append(data)


@pytest_twisted.ensureDeferred
async def test_carol_with_a_ticket_for_bob_is_refused_by_the_kms_and_answers_488(
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
    tmp_path: Path,
) -> None:
    """A TRANSFER_INIT that names carol, with alice's ticket for bob: carol's checks pass, the
    KMS refuses to resolve the ticket for her, and she answers 488 without any key."""
    proxy = FakeProxy()
    port = reactor.listenUDP(0, proxy, interface="127.0.0.1")  # type: ignore[attr-defined]
    cleanup.append(port.stopListening)
    carol = UeSim(
        reactor,
        "carol",
        ids["carol"],
        ("127.0.0.1", port.getHost().port),
        domain=DOMAIN,
        kms=_access(kms, ids, keys, "carol"),
    )
    await carol.start()
    cleanup.append(carol.stop)

    # alice's side, by hand: a ticket for bob, a TRANSFER_INIT for carol
    now = float(reactor.seconds())
    request = kms_client.request_init(
        aor("alice"), keys["alice"], (aor("bob"),), now, kms=KMS_ID, sessions=1
    )
    cert, key = certs.write(ids["alice"], tmp_path / "alice")
    pin = ids["kms"].fingerprint()
    _, body = await threads.deferToThread(
        kms_post, kms.address, pin, cert, key, request.encode(), 5.0
    )
    reply, got = kms_client.open_reply(body, keys["alice"], request)
    mpk, _ = kms_client.ticket_keys(got)
    init = transfer.transfer_init(
        aor("alice"),
        aor("carol"),
        kms_client.ticket_of(reply),
        mpk,
        [kms_client.tgk_spi(1)],
        now,
    )
    caller = lab_ue.UserAgent(aor("alice"), "127.0.0.1", port.getHost().port, ("127.0.0.1", 9))
    plan = lab_ue.MediaPlan(
        "127.0.0.1",
        ids["alice"].fingerprint(),
        9,
        e2ae=False,
        key_mgmt=lab_ue.key_mgmt_value(init),
    )
    invite, _ = caller.invite(aor("carol"), lab_ue.build_sdp(plan, username="alice"))
    port.write(invite.serialise(), ("127.0.0.1", carol.node.port))

    async def final() -> Response:
        for _ in range(100):
            for data in proxy.got:
                msg = parse_datagram(data)
                if isinstance(msg, Response) and msg.status >= 200:
                    return msg
            await task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"no final response: {proxy.got!r}")

    response = await final()
    assert isinstance(invite, Request)
    assert response.status == 488
    assert response.get("Warning") == '399 127.0.0.1 "AUTH_FAILURE: the KMS refused: AUTH_FAILURE"'
    assert any(d.startswith(b"SIP/2.0 100 ") for d in proxy.got)  # Trying while resolving
    assert carol.kms_exchanges == ["RESOLVE_INIT_PSK"]
    assert carol.calls == {}


# ---------------------------------------------------------------------------------------------
# e2ae ue


def _cli_args(
    tmp: Path, kms: KmsService, ids: dict[str, certs.CertAndKey], keys: dict[str, bytes], name: str
) -> list[str]:
    cert, _ = certs.write(ids[name], tmp)
    (tmp / f"{name}.psk").write_text(keys[name].hex() + "\n")
    host, port = kms.address
    return [
        "--user",
        name,
        "--cert",
        str(cert.with_suffix("")),
        "--kms",
        f"{host}:{port}",
        "--kms-pin",
        str(ids["kms"].fingerprint()),
        "--kms-psk-file",
        str(tmp / f"{name}.psk"),
        "--json",
        "--timeout",
        "15",
    ]


@pytest_twisted.ensureDeferred
async def test_e2ae_ue_processes_call_with_keys_from_the_kms(
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    cleanup: list[Any],
    tmp_path: Path,
) -> None:
    _, gm = _pcscf(cleanup)
    pcscf = f"{gm[0]}:{gm[1]}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    bob = subprocess.Popen(
        [
            *e2ae_command(),
            "ue",
            "--pcscf",
            pcscf,
            "--answer",
            "1",
            "--message",
            "hello from bob",
            *_cli_args(tmp_path, kms, ids, keys, "bob"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    cleanup.append(lambda: bob.poll() is not None or (bob.kill(), bob.wait()))
    assert bob.stdout is not None
    first = await threads.deferToThread(bob.stdout.readline)
    assert first == f"ue bob registered {aor('bob')} (200)\n"
    alice = await threads.deferToThread(
        run_e2ae,
        [
            "ue",
            "--pcscf",
            pcscf,
            "--call",
            aor("bob"),
            "--message",
            "hello bob",
            "--wait-messages",
            "1",
            "--floor",
            *_cli_args(tmp_path, kms, ids, keys, "alice"),
        ],
    )
    out = alice.stdout.decode().splitlines()
    assert alice.returncode == 0, out + alice.stderr.decode().splitlines()[-20:]
    result = json.loads(out[1])
    assert result["bye"] == 200
    assert result["messages_received"] == ["hello from bob"]
    assert result["floor_granted"] == [1]
    streams = result["streams"]
    assert [(s["proto"], s["tls_psk"], s["cs_id"]) for s in streams] == [
        ("TCP/TLS/MSRP", True, 1),
        ("TCP/TLS/BFCP", True, 2),
    ]
    assert all(not s["fingerprint_verified"] and s["bytes_sent"] > 0 for s in streams)
    rest, err = await threads.deferToThread(bob.communicate, None, 30)
    assert bob.returncode == 0, err
    answered = json.loads(rest.splitlines()[0])
    assert answered["ended"] == "remote hung up"
    assert all(s["tls_psk"] and s["bytes_received"] > 0 for s in answered["streams"])
    assert kms.requests == 2


def test_e2ae_ue_kms_options_are_checked(tmp_path: Path) -> None:
    got = run_e2ae(
        ["ue", "--pcscf", "127.0.0.1:5060", "--user", "alice", "--kms", "127.0.0.1:8443"]
    )
    assert got.returncode == 2
    assert got.stderr.decode().strip() == "e2ae ue: --kms needs --kms-pin and --kms-psk-file"


# ---------------------------------------------------------------------------------------------
# the pure parts


def test_a_keyed_plan_and_what_the_ue_reads_from_it(ids: dict[str, certs.CertAndKey]) -> None:
    data = b"\x01\x00" * 8  # any bytes: the SDP does not look inside
    value = "mikey " + base64.b64encode(data).decode()
    plan = lab_ue.MediaPlan(
        "127.0.0.1", ids["alice"].fingerprint(), 9, bfcp_port=9, e2ae=True, key_mgmt=value
    )
    text = lab_ue.build_sdp(plan).decode()
    assert text.count(f"a=key-mgmt:{value}\r\n") == 1
    assert "a=fingerprint" not in text and "a=3ge2ae" not in text
    streams = lab_ue.streams_of(text.encode(), from_offerer=True)
    assert [(s.tls, s.key_mgmt) for s in streams] == [(True, True), (True, True)]
    assert lab_ue.crypto_sessions(streams) == {0: 1, 1: 2}
    with pytest.raises(lab_ue.RemoteUeError, match="without a usable a=fingerprint"):
        lab_ue.media_actions(text.encode(), from_offerer=True, own=plan)
    actions = lab_ue.media_actions(text.encode(), from_offerer=True, own=plan, keyed=True)
    assert [(a.media, a.cs_id, a.pinned) for a in actions] == [
        ("message", 1, ()),
        ("application", 2, ()),
    ]
    # without key_mgmt the plan is the certificate one, unchanged
    plain = lab_ue.build_sdp(attrs_evolve(plan, key_mgmt=None)).decode()
    assert "a=key-mgmt" not in plain and plain.count("a=3ge2ae:requested") == 2


def attrs_evolve(plan: lab_ue.MediaPlan, **kw: Any) -> lab_ue.MediaPlan:
    import attrs

    return attrs.evolve(plan, **kw)


@pytest.mark.parametrize(
    ("session", "media", "words"),
    [
        (None, None, "0 a=key-mgmt:mikey"),
        ("mikey AAAA", "mikey AQID", "keyed by different MIKEY data"),
        ("mikey !!", None, "not base64"),
        ("x-kmp AAAA", None, "0 a=key-mgmt:mikey"),
    ],
)
def test_the_transfer_message_of_an_sdp_is_one_mikey_message(
    session: str | None, media: str | None, words: str
) -> None:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    if session:
        lines.append(f"a=key-mgmt:{session}")
    lines += ["m=message 9 TCP/TLS/MSRP *", "a=setup:active"]
    if media:
        lines.append(f"a=key-mgmt:{media}")
    lines += ["m=application 9 TCP/TLS/BFCP *", "a=setup:active"]
    sdp = ("\r\n".join(lines) + "\r\n").encode()
    with pytest.raises(MikeyError) as info:
        lab_ue.transfer_message(sdp)
    assert info.value.code == ErrorNo.UNSPECIFIED and words in info.value.reason


def test_a_kms_access_keeps_its_key_out_of_repr(ids: dict[str, certs.CertAndKey]) -> None:
    access = lab_ue.KmsAccess(("127.0.0.1", 8443), ids["kms"].fingerprint(), b"\xaa" * 16)
    assert "aaaa" not in repr(access) and "170" not in repr(access)
    assert kms_client.mikey_warning(MikeyError(ErrorNo.INVALID_ID, "x")) == "INVALID_ID: x"
