"""The list server in the lab: real UEs (UeSim) behind the real P-CSCF, the core stub routing
the group PSI to the list server and telling it of every registration, a KMS over HTTPS.
Alice's MESSAGE to the group reaches the registered members, re-protected or as she sent it
as her ticket decides, and dave, who is not registered, gets it when he registers.
127.0.0.1 only."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

import certs
import lab.ue as lab_ue
from kms.config import KmsConfig, ProvisionedUser
from kms.service import KmsService
from kms.service import build as build_kms
from kms.store import User
from lab.core import CoreStub
from lab.uesim import UeSim
from listserver.config import Group, KmsLink, ListServerConfig
from listserver.service import ListServerService, build
from pcscf.service import SipService
from pcscf.sip.proxy import Peer, ProxyConfig

NOW = datetime.datetime.now(datetime.UTC)
DOMAIN = "lab.example"
USERS = ("alice", "bob", "carol", "dave")
LISTS = f"sip:lists@{DOMAIN}"
PSI = f"sip:friends@{DOMAIN}"
KMS_ID = "kms.e2ae.lab"


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


@pytest.fixture(scope="module")
def ids() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in (*USERS, "lists", "kms")}


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    return {name: os.urandom(16) for name in (*USERS, "lists")}


@pytest.fixture
def lab(
    tmp_path: Path, ids: dict[str, certs.CertAndKey], keys: dict[str, bytes], cleanup: list[Any]
) -> dict[str, Any]:
    users = [ProvisionedUser(User(aor(n), keys[n]), (ids[n].fingerprint(),)) for n in USERS]
    users.append(ProvisionedUser(User(LISTS, keys["lists"], (PSI,)), (ids["lists"].fingerprint(),)))
    kms = build_kms(
        KmsConfig(
            identity=KMS_ID,
            listen=("127.0.0.1", 0),
            cert=Path("unused"),
            key=Path("unused"),
            state=tmp_path / "kms.sqlite",
            users=tuple(users),
        ),
        identity=ids["kms"],
        reactor=reactor,
    )
    kms.startService()
    cleanup.append(kms.stopService)
    core = CoreStub(
        reactor,
        domain=DOMAIN,
        list_server=("127.0.0.1", 9),
        list_psis=frozenset({PSI}),
        known_users=frozenset({aor("dave")}),
    )
    core_port = core.listen()
    cleanup.append(core.stop)
    cert, key = certs.write(ids["lists"], tmp_path)
    app = build(
        ListServerConfig(
            sip=("127.0.0.1", 0),
            core=("127.0.0.1", core_port),
            identity=LISTS,
            kms=KmsLink(kms.address, ids["kms"].fingerprint(), keys["lists"], cert, key, KMS_ID),
            store=tmp_path / "lists.sqlite",
            groups=(Group(PSI, tuple(aor(n) for n in USERS)),),
        ),
        reactor=reactor,
    )
    app.startService()
    cleanup.append(app.stopService)
    core.list_server = app.address
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
    return {"kms": kms, "core": core, "app": app, "gm": pcscf.config.gm}


async def _ue(
    lab: dict[str, Any],
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    cleanup: list[Any],
    name: str,
    *,
    register: bool = True,
) -> UeSim:
    kms: KmsService = lab["kms"]
    access = lab_ue.KmsAccess(kms.address, ids["kms"].fingerprint(), keys[name])
    sim = UeSim(reactor, name, ids[name], lab["gm"], domain=DOMAIN, kms=access, media_timeout=5)
    await sim.start()
    cleanup.append(sim.stop)
    if register:
        assert (await sim.register()).status == 200
    return sim


async def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        d: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(0.05, d.callback, None)
        await d
    return bool(predicate())


def _next(sim: UeSim) -> defer.Deferred[Any]:
    d = sim.im.next_message()
    d.addTimeout(10, reactor)
    return d


@pytest_twisted.ensureDeferred
async def test_a_group_message_reaches_the_members_and_dave_when_he_registers(
    lab: dict[str, Any], ids: Any, keys: Any, cleanup: list[Any]
) -> None:
    app: ListServerService = lab["app"]
    alice = await _ue(lab, ids, keys, cleanup, "alice")
    bob = await _ue(lab, ids, keys, cleanup, "bob")
    carol = await _ue(lab, ids, keys, cleanup, "carol")
    # alice's ticket names the PSI only: the list server re-protects for everybody
    to_bob, to_carol = _next(bob), _next(carol)
    sent = await alice.im.send(PSI, "hello friends")
    assert sent.status == 202, sent.warning
    for got in (await to_bob, await to_carol):
        assert (got.sender, got.protected_by, got.text) == (alice.aor, LISTS, "hello friends")
        assert got.reprotected
    # dave is known to the core but not registered: 480, stored by the list server
    assert await _wait(lambda: app.store is not None and app.store.count(aor("dave")) == 1)
    assert alice.im.received == [] and alice.im.refused == []  # the sender gets no copy

    # with a URI list naming bob, alice's ticket names bob: he gets her parts as she sent them
    to_bob = _next(bob)
    sent = await alice.im.send(PSI, "just bob", recipients=(bob.aor,))
    assert sent.status == 202, sent.warning
    got = await to_bob
    assert (got.sender, got.protected_by, got.text) == (alice.aor, alice.aor, "just bob")

    # dave registers: the core tells the list server, which delivers what it stored
    dave = await _ue(lab, ids, keys, cleanup, "dave", register=False)
    to_dave = _next(dave)
    assert (await dave.register()).status == 200
    got = await to_dave
    assert (got.sender, got.protected_by, got.text) == (alice.aor, LISTS, "hello friends")
    assert await _wait(lambda: app.store is not None and app.store.count() == 0)
    assert bob.im.refused == [] and carol.im.refused == [] and dave.im.refused == []
    assert [m.text for m in bob.im.received] == ["hello friends", "just bob"]
    assert alice.im.received == []
