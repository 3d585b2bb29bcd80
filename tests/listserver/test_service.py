"""The list server on real sockets: a KMS over HTTPS, the list server, and a UDP SIP peer
playing the core and the members (it answers each member's MESSAGE as told). Alice's
MESSAGE to a group PSI gets 202; a member her ticket names gets her parts byte for byte, a
member it does not name gets a body the list server protected with a ticket of its own, a
member that is not registered gets the message after its registration, also after a restart
of the list server. Bad input gets its status and Warning. 127.0.0.1 only."""

from __future__ import annotations

import datetime
import os
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import formatEvent, globalLogPublisher

import certs
from immsg import core as im
from immsg import mime
from kms import client as kms_client
from kms.cli import post
from kms.config import KmsConfig, ProvisionedUser
from kms.service import KmsService
from kms.service import build as build_kms
from kms.store import User
from listserver import core
from listserver.config import Group, KmsLink, ListServerConfig
from listserver.service import ListServerService, build
from mikey.message import Message as MikeyMessage
from mikey.payloads import KeyData
from pcscf.sip import Request, Response, make_response
from pcscf.sip.message import make_request, parse_datagram

NOW = datetime.datetime.now(datetime.UTC)
DOMAIN = "lab.example"
USERS = ("alice", "bob", "carol", "dave")
LISTS = f"sip:lists@{DOMAIN}"
KMS_ID = "kms.e2ae.lab"
#: A group the KMS does not know: only the list server resolves tickets naming it.
FRIENDS = f"sip:friends@{DOMAIN}"
#: A group the KMS knows (bob and carol are its members there).
TEAM = f"sip:team@{DOMAIN}"


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


@pytest.fixture(scope="module")
def ids() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in (*USERS, "lists", "kms")}


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    return {name: os.urandom(16) for name in (*USERS, "lists")}


@pytest.fixture
def files(tmp_path: Path, ids: dict[str, certs.CertAndKey]) -> dict[str, tuple[Path, Path]]:
    return {name: certs.write(ids[name], tmp_path / "certs") for name in (*USERS, "lists")}


@pytest.fixture
def kms(
    tmp_path: Path, ids: dict[str, certs.CertAndKey], keys: dict[str, bytes], cleanup: list[Any]
) -> KmsService:
    groups = {"bob": (TEAM,), "carol": (TEAM,), "lists": (FRIENDS, TEAM)}
    users = [
        ProvisionedUser(
            User(LISTS if n == "lists" else aor(n), keys[n], groups.get(n, ())),
            (ids[n].fingerprint(),),
        )
        for n in (*USERS, "lists")
    ]
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


class Peer(DatagramProtocol):
    """The core and the members: records each request, answers it with the member's status
    (200 unless told), and sends requests of its own to the list server."""

    def __init__(self) -> None:
        self.got: list[Request] = []
        self.status: dict[str, int] = {}
        self.waiting: dict[str, defer.Deferred[Response]] = {}

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        message = parse_datagram(data)
        if isinstance(message, Response):
            if message.status >= 200 and message.call_id in self.waiting:
                self.waiting.pop(message.call_id).callback(message)
            return
        self.got.append(message)
        status = self.status.get(message.uri, 200)
        assert self.transport is not None
        self.transport.write(make_response(message, status, to_tag="m").serialise(), addr)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host = self.transport.getHost()
        return (host.host, host.port)

    def to(self, member: str) -> list[Request]:
        return [r for r in self.got if r.uri == member]

    async def ask(self, request: Request, dest: tuple[str, int]) -> Response:
        done: defer.Deferred[Response] = defer.Deferred()
        self.waiting[request.call_id] = done
        assert self.transport is not None
        self.transport.write(request.serialise(), dest)
        done.addTimeout(10, reactor)
        return await done

    def send_raw(self, data: bytes, dest: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.write(data, dest)

    def request(
        self,
        method: str,
        uri: str,
        *,
        from_: str = aor("alice"),
        to: str | None = None,
        body: bytes = b"",
        content_type: str = "",
        extra: Sequence[tuple[str, str]] = (),
    ) -> Request:
        host, port = self.address
        return make_request(
            method,
            uri,
            via=f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)}",
            from_=f"<{from_}>;tag={secrets.token_hex(4)}",
            to=f"<{to or uri}>",
            call_id=secrets.token_hex(8),
            cseq=1,
            body=body,
            content_type=content_type,
            extra=extra,
        )


@pytest.fixture
def peer(cleanup: list[Any]) -> Peer:
    proto = Peer()
    port = reactor.listenUDP(0, proto, interface="127.0.0.1", maxPacketSize=65_535)
    cleanup.append(port.stopListening)
    return proto


@pytest.fixture
def lab(
    tmp_path: Path,
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    files: dict[str, tuple[Path, Path]],
    kms: KmsService,
    peer: Peer,
    cleanup: list[Any],
) -> dict[str, Any]:
    cert, key = files["lists"]
    config = ListServerConfig(
        sip=("127.0.0.1", 0),
        core=peer.address,
        identity=LISTS,
        kms=KmsLink(kms.address, ids["kms"].fingerprint(), keys["lists"], cert, key, KMS_ID),
        store=tmp_path / "lists.sqlite",
        groups=(
            Group(FRIENDS, tuple(aor(n) for n in USERS), kms_group=False),
            Group(TEAM, (aor("alice"), aor("bob"), aor("carol")), kms_group=True),
        ),
    )
    lab: dict[str, Any] = {"config": config, "kms": kms, "peer": peer}

    def start() -> ListServerService:
        app = build(config, reactor=reactor)
        app.startService()
        cleanup.append(lambda: app.stopService() if app.running else None)
        lab["app"] = app
        return app

    lab["start"] = start
    start()
    return lab


async def _kms(
    lab: dict[str, Any],
    files: dict[str, tuple[Path, Path]],
    keys: dict[str, bytes],
    ids: dict[str, certs.CertAndKey],
    name: str,
    request: MikeyMessage,
) -> tuple[MikeyMessage, tuple[KeyData, ...]]:
    cert, key = files[name]
    kms: KmsService = lab["kms"]
    _, body = await threads.deferToThread(
        post, kms.address, ids["kms"].fingerprint(), cert, key, request.encode(), 10.0
    )
    return kms_client.open_reply(body, keys[name], request)


@pytest.fixture
def ask(
    lab: dict[str, Any],
    files: dict[str, tuple[Path, Path]],
    keys: dict[str, bytes],
    ids: dict[str, certs.CertAndKey],
) -> Any:
    async def ask(name: str, request: MikeyMessage) -> tuple[MikeyMessage, tuple[KeyData, ...]]:
        return await _kms(lab, files, keys, ids, name, request)

    return ask


async def _protect(
    ask: Any,
    keys: dict[str, bytes],
    text: str,
    psi: str,
    responders: Sequence[str],
    recipients: Sequence[str] = (),
) -> im.Outgoing:
    now = float(reactor.seconds())
    request = kms_client.message_request_init(
        aor("alice"), keys["alice"], tuple(responders), now, kms=KMS_ID
    )
    reply, got = await ask("alice", request)
    forked = kms_client.forked_keys(got)
    ((spi, gtgk),) = forked.gtgks.items()
    return im.protect(
        im.text_entity(text),
        sender=aor("alice"),
        recipient=psi,
        ticket=kms_client.ticket_of(reply),
        mpki=forked.mpki,
        mpkr=forked.mpkr,
        gtgk=gtgk,
        gtgk_spi=spi,
        now=now,
        recipients=recipients,
    )


async def _open(ask: Any, keys: dict[str, bytes], name: str, request: Request) -> im.Incoming:
    """What ``name`` reads from a MESSAGE it got: resolved as itself, verified, opened."""
    incoming = im.read(request.get("Content-Type") or "", request.body)
    now = float(reactor.seconds())
    im.check_fresh(incoming, now)
    resolve = kms_client.resolve_init(
        aor(name), keys[name], incoming.ticket, now, kms=KMS_ID, csb_id=incoming.transfer.csb_id
    )
    _, got = await ask(name, resolve)
    forked = kms_client.forked_keys(got)
    entity = im.open_content(incoming, mpki=forked.mpki, gtgk=forked.gtgks[incoming.transfer.spi])
    return incoming, im.text_of(entity)  # type: ignore[return-value]


async def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        d: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(0.05, d.callback, None)
        await d
    return bool(predicate())


async def _message(peer: Peer, app: ListServerService, psi: str, out: im.Outgoing) -> Response:
    request = peer.request("MESSAGE", psi, body=out.body, content_type=out.content_type)
    return await peer.ask(request, app.address)


def _warning(response: Response) -> str:
    return response.get("Warning") or ""


@pytest_twisted.ensureDeferred
async def test_a_message_to_a_group_passes_through_is_re_protected_and_is_stored(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes]
) -> None:
    peer: Peer = lab["peer"]
    app: ListServerService = lab["app"]
    peer.status[aor("dave")] = 480  # dave is not registered
    out = await _protect(ask, keys, "hello friends", FRIENDS, (FRIENDS, aor("bob")))
    request = peer.request("MESSAGE", FRIENDS, body=out.body, content_type=out.content_type)
    response = await peer.ask(request, app.address)
    assert response.status == 202

    assert await _wait(lambda: app.store is not None and app.store.count(aor("dave")) == 1)
    assert await _wait(lambda: peer.to(aor("bob")) and peer.to(aor("carol")))
    assert peer.to(aor("alice")) == []  # the sender does not get its own message back
    # bob, named by alice's ticket: alice's parts byte for byte
    (to_bob,) = peer.to(aor("bob"))
    assert to_bob.body == out.body and to_bob.get("Content-Type") == out.content_type
    assert to_bob.get("From") == request.get("From")
    assert to_bob.call_id != request.call_id
    assert to_bob.get("To") == f"<{aor('bob')}>"
    assert f"{app.address[0]}:{app.address[1]}" in (to_bob.get("Via") or "")
    got, text = await _open(ask, keys, "bob", to_bob)
    assert text == "hello friends" and got.transfer.initiator == aor("alice")
    # carol, not named: the list server's protection, a ticket naming only carol
    (to_carol,) = peer.to(aor("carol"))
    assert to_carol.body != out.body and to_carol.get("From") == request.get("From")
    got, text = await _open(ask, keys, "carol", to_carol)
    assert text == "hello friends"
    assert got.transfer.initiator == LISTS and got.transfer.responder == aor("carol")
    assert core.responders(got.ticket) == (aor("carol"),)
    # carol could not have resolved alice's ticket herself
    with pytest.raises(Exception, match="the KMS refused"):
        await _open(ask, keys, "carol", to_bob)
    assert app.kms_exchanges.count("RESOLVE_INIT_PSK") == 1
    assert app.kms_exchanges.count("REQUEST_INIT_PSK") == 2  # carol's and dave's tickets

    # dave answered 480: stored; the list server restarts; dave registers and gets it
    (first_try,) = peer.to(aor("dave"))
    await app.stopService()
    app = lab["start"]()
    assert app.store is not None and app.store.count(aor("dave")) == 1
    peer.status[aor("dave")] = 200
    register = peer.request(
        "REGISTER",
        f"sip:{DOMAIN}",
        from_=aor("dave"),
        to=aor("dave"),
        extra=[("Expires", "600"), ("Contact", "<sip:dave@127.0.0.1:5999>")],
    )
    assert (await peer.ask(register, app.address)).status == 200
    assert await _wait(lambda: len(peer.to(aor("dave"))) == 2)
    assert await _wait(lambda: app.store is not None and app.store.count() == 0)
    stored = peer.to(aor("dave"))[1]
    assert stored.body == first_try.body and stored.get("From") == request.get("From")
    got, text = await _open(ask, keys, "dave", stored)
    assert text == "hello friends" and got.transfer.responder == aor("dave")


@pytest_twisted.ensureDeferred
async def test_the_list_server_s_ticket_for_a_member_is_reused(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes]
) -> None:
    peer: Peer = lab["peer"]
    app: ListServerService = lab["app"]
    for n in range(2):
        out = await _protect(ask, keys, f"message {n}", FRIENDS, (FRIENDS, aor("bob")))
        assert (await _message(peer, app, FRIENDS, out)).status == 202
    assert await _wait(lambda: len(peer.to(aor("carol"))) == 2 and len(peer.to(aor("dave"))) == 2)
    assert app.kms_exchanges.count("RESOLVE_INIT_PSK") == 2
    assert app.kms_exchanges.count("REQUEST_INIT_PSK") == 2  # one per member, not per message
    texts = sorted([(await _open(ask, keys, "carol", r))[1] for r in peer.to(aor("carol"))])
    assert texts == ["message 0", "message 1"]


@pytest_twisted.ensureDeferred
async def test_a_group_the_kms_knows_passes_through_and_the_uri_list_is_removed(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes]
) -> None:
    peer: Peer = lab["peer"]
    app: ListServerService = lab["app"]
    out = await _protect(ask, keys, "team news", TEAM, (TEAM,), recipients=(aor("carol"),))
    assert (await _message(peer, app, TEAM, out)).status == 202
    assert await _wait(lambda: peer.to(aor("carol")))
    await _wait(lambda: False, 0.3)
    assert peer.to(aor("bob")) == []  # the URI list chose carol only
    (to_carol,) = peer.to(aor("carol"))
    sent = mime.parse_multipart(out.content_type, out.body)
    kept = mime.parse_multipart(to_carol.get("Content-Type") or "", to_carol.body)
    assert kept == sent[:2] and sent[2].content_type == im.LIST_TYPE
    got, text = await _open(ask, keys, "carol", to_carol)  # resolved as a member of TEAM
    assert text == "team news" and got.transfer.initiator == aor("alice")
    assert app.kms_exchanges == ["RESOLVE_INIT_PSK"]


@pytest_twisted.ensureDeferred
async def test_a_register_from_anywhere_but_the_core_is_refused_and_changes_nothing(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes], cleanup: list[Any]
) -> None:
    peer: Peer = lab["peer"]
    app: ListServerService = lab["app"]
    other = Peer()  # another process on the same host, not the core
    port = reactor.listenUDP(0, other, interface="127.0.0.1", maxPacketSize=65_535)
    cleanup.append(port.stopListening)
    gone = other.request("REGISTER", f"sip:{DOMAIN}", from_=aor("carol"), extra=[("Expires", "0")])
    gone = gone.evolve(headers=gone.replacing("To", [f"<{aor('carol')}>"]))
    answer = await other.ask(gone, app.address)
    assert answer.status == 403
    assert "from the core only" in (answer.get("Warning") or "")
    # carol still counts as registered: the message is tried at once, not stored untried
    out = await _protect(ask, keys, "hi", FRIENDS, (FRIENDS, aor("bob")))
    assert (await _message(peer, app, FRIENDS, out)).status == 202
    assert await _wait(lambda: len(peer.to(aor("carol"))) == 1)
    assert app.store is not None and app.store.count(aor("carol")) == 0
    assert other.got == []  # and nothing was delivered toward it


@pytest_twisted.ensureDeferred
async def test_a_member_not_registered_is_stored_without_a_try_and_refusals_are_not_stored(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes]
) -> None:
    peer: Peer = lab["peer"]
    app: ListServerService = lab["app"]
    gone = peer.request("REGISTER", f"sip:{DOMAIN}", from_=aor("carol"), extra=[("Expires", "0")])
    gone = gone.evolve(headers=gone.replacing("To", [f"<{aor('carol')}>"]))
    assert (await peer.ask(gone, app.address)).status == 200
    peer.status[aor("bob")] = 403
    out = await _protect(ask, keys, "hi", FRIENDS, (FRIENDS, aor("bob")))
    assert (await _message(peer, app, FRIENDS, out)).status == 202
    assert await _wait(lambda: app.store is not None and app.store.count(aor("carol")) == 1)
    assert await _wait(lambda: peer.to(aor("bob")) and peer.to(aor("dave")))
    assert peer.to(aor("carol")) == []
    assert app.store is not None and app.store.count(aor("bob")) == 0  # refused: not stored
    assert app.store.count() == 1


@pytest_twisted.ensureDeferred
async def test_bad_messages_get_their_status_and_warning(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes]
) -> None:
    peer: Peer = lab["peer"]
    app: ListServerService = lab["app"]
    out = await _protect(ask, keys, "hello", FRIENDS, (FRIENDS,))

    # a tampered S/MIME part: the TRANSFER_INIT's digest no longer matches
    parts = list(mime.parse_multipart(out.content_type, out.body))
    der = parts[1].body
    parts[1] = mime.Part(parts[1].headers, der[:-1] + bytes([der[-1] ^ 1]))
    ct, body = mime.multipart(parts)
    tampered = await peer.ask(
        peer.request("MESSAGE", FRIENDS, body=body, content_type=ct), app.address
    )
    assert tampered.status == 403 and "does not verify" in _warning(tampered)
    assert _warning(tampered).startswith("399 list-server ")

    # alice's body under somebody else's From
    spoofed = peer.request(
        "MESSAGE", FRIENDS, from_=aor("eve"), body=out.body, content_type=out.content_type
    )
    refused_from = await peer.ask(spoofed, app.address)
    assert refused_from.status == 403 and "not the TRANSFER_INIT's Initiator" in _warning(
        refused_from
    )

    # the real one, then a replay of it
    assert (await _message(peer, app, FRIENDS, out)).status == 202
    replay = await _message(peer, app, FRIENDS, out)
    assert replay.status == 403 and "replayed" in _warning(replay)

    # too big, an unknown PSI, another method
    big = peer.request("MESSAGE", FRIENDS, body=b"x" * (im.MAX_BODY_BYTES + 1), content_type=ct)
    assert (await peer.ask(big, app.address)).status == 413
    unknown = await _message(peer, app, aor("nobody"), out)
    assert unknown.status == 404 and aor("nobody") in _warning(unknown)
    options = await peer.ask(peer.request("OPTIONS", FRIENDS), app.address)
    assert options.status == 405 and options.get("Allow") == "MESSAGE, REGISTER"

    # not SIP: dropped, the list server carries on
    peer.send_raw(b"\x00\x01 not SIP at all", app.address)
    again = await peer.ask(peer.request("OPTIONS", FRIENDS), app.address)
    assert again.status == 405

    # a URI list naming somebody outside the group
    stranger = await _protect(
        ask, keys, "x", FRIENDS, (FRIENDS,), recipients=(aor("bob"), aor("eve"))
    )
    refused = await _message(peer, app, FRIENDS, stranger)
    assert refused.status == 403 and aor("eve") in _warning(refused)

    # a body that is not a protected MESSAGE
    plain = peer.request("MESSAGE", FRIENDS, body=b"hello", content_type="text/plain")
    assert (await peer.ask(plain, app.address)).status == 415


@pytest_twisted.ensureDeferred
async def test_a_ticket_the_list_server_may_not_resolve_is_403(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes]
) -> None:
    peer: Peer = lab["peer"]
    app: ListServerService = lab["app"]
    out = await _protect(ask, keys, "for bob only", FRIENDS, (aor("bob"),))
    response = await _message(peer, app, FRIENDS, out)
    assert response.status == 403
    assert "the list server may not resolve the ticket: " in _warning(response)
    await _wait(lambda: False, 0.3)
    assert peer.got == []  # nobody got anything


@pytest_twisted.ensureDeferred
async def test_a_retransmitted_message_gets_the_same_answer_and_one_fan_out(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes]
) -> None:
    peer: Peer = lab["peer"]
    app: ListServerService = lab["app"]
    out = await _protect(ask, keys, "once", TEAM, (TEAM,))
    request = peer.request("MESSAGE", TEAM, body=out.body, content_type=out.content_type)
    peer.send_raw(request.serialise(), app.address)  # sent twice, as after a lost answer
    assert (await peer.ask(request, app.address)).status == 202
    assert (await peer.ask(request, app.address)).status == 202
    await _wait(lambda: False, 0.5)
    assert len(peer.to(aor("bob"))) == 1 and len(peer.to(aor("carol"))) == 1


@pytest_twisted.ensureDeferred
async def test_at_its_transaction_limit_the_list_server_answers_503(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes], cleanup: list[Any]
) -> None:
    peer: Peer = lab["peer"]
    await lab["app"].stopService()
    config = lab["config"]
    app = build(attrs.evolve(config, max_pending=1), reactor=reactor)
    app.startService()
    cleanup.append(app.stopService)
    first = await _protect(ask, keys, "one", TEAM, (TEAM,))
    second = await _protect(ask, keys, "two", TEAM, (TEAM,))
    r1 = peer.request("MESSAGE", TEAM, body=first.body, content_type=first.content_type)
    r2 = peer.request("MESSAGE", TEAM, body=second.body, content_type=second.content_type)
    d1 = defer.Deferred.fromCoroutine(peer.ask(r1, app.address))
    busy = await peer.ask(r2, app.address)
    assert busy.status == 503 and busy.get("Retry-After")
    assert (await d1).status == 202


@pytest_twisted.ensureDeferred
async def test_a_kms_that_cannot_be_reached_is_503(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes], cleanup: list[Any]
) -> None:
    peer: Peer = lab["peer"]
    await lab["app"].stopService()
    config = lab["config"]
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()
    app = build(
        attrs.evolve(config, kms=attrs.evolve(config.kms, address=closed, timeout=2.0)),
        reactor=reactor,
    )
    app.startService()
    cleanup.append(app.stopService)
    out = await _protect(ask, keys, "hello", TEAM, (TEAM,))
    response = await _message(peer, app, TEAM, out)
    assert response.status == 503 and "the KMS cannot be reached" in _warning(response)
    assert response.get("Retry-After")


@pytest_twisted.ensureDeferred
async def test_the_log_names_call_group_member_sender_and_peer_and_never_a_key_or_the_text(
    lab: dict[str, Any], ask: Any, keys: dict[str, bytes], cleanup: list[Any]
) -> None:
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "listserver":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    cleanup.append(lambda: globalLogPublisher.removeObserver(observe))
    peer: Peer = lab["peer"]
    app: ListServerService = lab["app"]
    peer.status[aor("dave")] = 480
    out = await _protect(ask, keys, "a secret text", FRIENDS, (FRIENDS, aor("bob")))
    request = peer.request("MESSAGE", FRIENDS, body=out.body, content_type=out.content_type)
    assert (await peer.ask(request, app.address)).status == 202
    assert await _wait(lambda: len([e for e in events if "member" in e]) >= 3)
    accepted = [e for e in events if "accepted" in e["log_format"]]
    assert len(accepted) == 1
    assert accepted[0]["call_id"] == request.call_id and accepted[0]["group"] == FRIENDS
    assert accepted[0]["sender"] == aor("alice") and accepted[0]["peer"]
    per_member = {e["member"]: e for e in events if "member" in e}
    assert set(per_member) == {aor("bob"), aor("carol"), aor("dave")}
    for e in per_member.values():
        assert e["call_id"] == request.call_id and e["group"] == FRIENDS
        assert e["sender"] == aor("alice")
    assert "stored" in per_member[aor("dave")]["log_format"]
    secrets_seen = [k.hex() for k in keys.values()]
    for e in events:
        text = formatEvent(e) + repr({k: v for k, v in e.items() if not k.startswith("log_")})
        assert "a secret text" not in text
        assert not any(s in text for s in secrets_seen)


@pytest_twisted.ensureDeferred
async def test_build_opens_nothing_until_started_and_stop_closes_the_port_and_the_store(
    lab: dict[str, Any], cleanup: list[Any]
) -> None:
    config = lab["config"]
    await lab["app"].stopService()
    app = build(attrs.evolve(config, sip=("127.0.0.1", 0)), reactor=reactor)
    assert app.store is None and not app.running
    app.startService()
    host, port = app.address
    assert app.store is not None and app.running
    await app.stopService()
    assert app.store is None and not app.running
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))  # the port is free again
