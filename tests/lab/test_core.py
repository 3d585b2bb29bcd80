"""The core stub with a list server, over real UDP sockets on 127.0.0.1: a MESSAGE to a group
PSI goes to the list server as an ISC hop, the list server's MESSAGEs reach registered members
by their Path, a known member with no binding gets 480 (an unknown one 404, INVITE unchanged),
and every registration is told to the list server by a third-party REGISTER, retransmitted by
Timer E until a final response or Timer F (the core's timers on a fake clock)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from lab.core import CoreStub, ThirdPartyOutcome
from pcscf.sip.message import Request, Response
from tests.pcscf.test_service import Endpoint, _is

DOMAIN = "lab.example"
PSI = f"sip:group@{DOMAIN}"
BODY = b"--b\r\nContent-Type: application/mikey\r\n\r\n\x00\x01\xff\x80\r\n--b--\r\n"


class Answering(Endpoint):
    """A UDP endpoint that answers the methods in ``auto`` with ``status``."""

    def __init__(self, auto: tuple[str, ...] = (), status: int = 200) -> None:
        super().__init__(auto)
        self.status = status

    def _answer(self, msg: Request) -> str:
        text = super()._answer(msg)
        return text.replace("SIP/2.0 200 OK", f"SIP/2.0 {self.status} X", 1)


class Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "lab.core":
            self.events.append(event)

    def third_party(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "third-party" in str(e.get("log_format"))]


@pytest.fixture
def events() -> Iterator[Events]:
    seen = Events()
    globalLogPublisher.addObserver(seen)
    yield seen
    globalLogPublisher.removeObserver(seen)


def _udp(cleanup: list[Any], endpoint: Endpoint) -> Endpoint:
    port = reactor.listenUDP(0, endpoint, interface="127.0.0.1", maxPacketSize=65_535)
    cleanup.append(port.stopListening)
    return endpoint


def _core(cleanup: list[Any], list_server: Endpoint | None, **kw: Any) -> CoreStub:
    if list_server is not None:
        kw["list_server"] = ("127.0.0.1", list_server.port)
    core = CoreStub(reactor, domain=DOMAIN, list_psis=frozenset({PSI}), **kw)
    core.listen()
    cleanup.append(core.stop)
    return core


def _register(ue: Endpoint, core: CoreStub, user: str, expires: int, cseq: int = 1) -> None:
    """A REGISTER as the P-CSCF passes it on, with a Path back to ``ue``."""
    ue.send(
        f"""REGISTER sip:{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{ue.port};branch=z9hG4bKreg{user}{cseq}
Max-Forwards: 70
From: <sip:{user}@{DOMAIN}>;tag=r
To: <sip:{user}@{DOMAIN}>
Call-ID: reg-{user}
CSeq: {cseq} REGISTER
Contact: <sip:{user}@127.0.0.1:{ue.port}>
Path: <sip:tok{user}@127.0.0.1:{ue.port};lr>
Expires: {expires}""",
        core.port,
    )


def _message(sender: Endpoint, core: CoreStub, to: str, call: str, method: str = "MESSAGE") -> None:
    sender.send(
        f"""{method} {to} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{sender.port};branch=z9hG4bK{call}
Max-Forwards: 70
From: <sip:alice@{DOMAIN}>;tag=a
To: <{to}>
Call-ID: {call}
CSeq: 1 {method}
Contact: <sip:alice@127.0.0.1:{sender.port}>
Content-Type: multipart/mixed;boundary=b""",
        core.port,
        BODY,
    )


@pytest_twisted.ensureDeferred
async def test_a_message_to_a_psi_goes_to_the_list_server(cleanup: list[Any]) -> None:
    ls = _udp(cleanup, Answering(auto=("REGISTER", "MESSAGE"), status=202))
    ue = _udp(cleanup, Endpoint())
    core = _core(cleanup, ls)
    _message(ue, core, PSI, "to-group")
    got = await ls.wait(_is(method="MESSAGE", call="to-group"))
    assert got.uri == PSI
    assert got.get_all("Route") == [f"<sip:list@127.0.0.1:{ls.port};lr>"]
    assert got.get_all("Record-Route") == []
    vias = got.vias
    assert (vias[0].host, vias[0].port) == ("127.0.0.1", core.port)
    assert (vias[1].host, vias[1].port, vias[1].branch) == ("127.0.0.1", ue.port, "z9hG4bKto-group")
    assert got.body == BODY
    assert got.get("Max-Forwards") == "69"
    accepted = await ue.wait(_is(status=202, call="to-group"))
    assert len(accepted.vias) == 1  # the core's Via is gone


@pytest_twisted.ensureDeferred
async def test_the_list_servers_message_reaches_a_registered_member(cleanup: list[Any]) -> None:
    ls = _udp(cleanup, Answering(auto=("REGISTER",)))
    bob = _udp(cleanup, Answering(auto=("MESSAGE",), status=202))
    core = _core(cleanup, ls)
    _register(bob, core, "bob", 600)
    await bob.wait(_is(status=200, call="reg-bob"))
    _message(ls, core, f"sip:bob@{DOMAIN}", "fan-out-1")
    got = await bob.wait(_is(method="MESSAGE", call="fan-out-1"))
    assert got.uri == f"sip:bob@127.0.0.1:{bob.port}"  # the registered contact
    assert got.get_all("Route") == [f"<sip:tokbob@127.0.0.1:{bob.port};lr>"]  # the Path
    assert got.body == BODY
    accepted = await ls.wait(_is(status=202, call="fan-out-1"))
    assert accepted.cseq == (1, "MESSAGE")


@pytest_twisted.ensureDeferred
async def test_480_for_a_known_member_with_no_binding_and_404_otherwise(
    cleanup: list[Any], events: Events
) -> None:
    ls = _udp(cleanup, Answering(auto=("REGISTER",)))
    bob = _udp(cleanup, Endpoint())
    core = _core(cleanup, ls, known_users=frozenset({f"sip:carol@{DOMAIN}"}))
    _register(bob, core, "bob", 600)
    await bob.wait(_is(status=200, call="reg-bob"))
    _register(bob, core, "bob", 0, cseq=2)
    await bob.wait(lambda m: isinstance(m, Response) and m.cseq == (2, "REGISTER"))
    assert core.bindings == {}
    cases = [
        ("MESSAGE", "bob", 480),  # registered once, not now
        ("MESSAGE", "carol", 480),  # configured member
        ("MESSAGE", "dave", 404),  # nobody we know
        ("INVITE", "carol", 404),  # INVITE as before
        ("INVITE", "bob", 404),
    ]
    for method, user, status in cases:
        call = f"{method}-{user}"
        _message(ls, core, f"sip:{user}@{DOMAIN}", call, method)
        answer = await ls.wait(_is(call=call, status=status))
        assert answer.cseq == (1, method)
    assert [m.status for m in ls.got if isinstance(m, Response)] == [c[2] for c in cases]
    logged = [e for e in events.events if e.get("status") == 480]
    assert sorted(e["aor"] for e in logged) == [f"sip:bob@{DOMAIN}", f"sip:carol@{DOMAIN}"]


@pytest_twisted.ensureDeferred
async def test_register_and_deregister_are_told_to_the_list_server(
    cleanup: list[Any], events: Events
) -> None:
    ls = _udp(cleanup, Answering(auto=("REGISTER",)))
    bob = _udp(cleanup, Endpoint())
    core = _core(cleanup, ls)
    _register(bob, core, "bob", 600)
    first = await ls.wait(_is(method="REGISTER"))
    await bob.wait(_is(status=200, call="reg-bob"))
    _register(bob, core, "bob", 600)  # a retransmission: told once
    _register(bob, core, "bob", 0, cseq=2)
    await ls.wait(lambda m: isinstance(m, Request) and m.get("Expires") == "0")
    await deferLater(reactor, 0.2, lambda: None)
    registers = [m for m in ls.got if isinstance(m, Request)]
    assert len(registers) == 2
    for sent in registers:
        assert sent.uri == f"sip:127.0.0.1:{ls.port}"
        assert sent.from_.uri == sent.to.uri == f"sip:bob@{DOMAIN}"
        assert sent.from_.tag and sent.to.tag is None
        assert sent.get("Contact") == f"<sip:core@127.0.0.1:{core.port}>"
        assert (sent.top_via.host, sent.top_via.port) == ("127.0.0.1", core.port)
    assert first.get("Expires") == "600"
    second = registers[1]
    assert second.get("Expires") == "0"
    assert second.call_id != first.call_id
    assert second.top_via.branch != first.top_via.branch
    assert second.cseq[0] > first.cseq[0]
    assert core.third_party == [
        ThirdPartyOutcome(f"sip:bob@{DOMAIN}", 600, 200),
        ThirdPartyOutcome(f"sip:bob@{DOMAIN}", 0, 200),
    ]
    logged = events.third_party()
    assert [(e["log_level"].name, e["aor"], e["status"]) for e in logged] == [
        ("info", f"sip:bob@{DOMAIN}", 200),
        ("info", f"sip:bob@{DOMAIN}", 200),
    ]
    # the 200s went nowhere else: the member saw only its own 200s to REGISTER
    assert [m.cseq for m in bob.got] == [(1, "REGISTER"), (1, "REGISTER"), (2, "REGISTER")]


async def _copies(ls: Endpoint, count: int) -> list[Request]:
    for _ in range(100):
        got = [m for m in ls.got if isinstance(m, Request) and m.method == "REGISTER"]
        if len(got) >= count:
            return got
        await deferLater(reactor, 0.01, lambda: None)
    return [m for m in ls.got if isinstance(m, Request)]


@pytest_twisted.ensureDeferred
async def test_timer_e_retransmits_until_timer_f(cleanup: list[Any], events: Events) -> None:
    ls = _udp(cleanup, Endpoint())  # never answers
    bob = _udp(cleanup, Endpoint())
    clock = task.Clock()
    core = _core(cleanup, ls, clock=clock)
    _register(bob, core, "bob", 600)
    await bob.wait(_is(status=200, call="reg-bob"))
    (first,) = await _copies(ls, 1)
    # RFC 3261 17.1.2.2: T1 = 0.5 s doubling up to T2 = 4 s, until 64*T1 = 32 s
    schedule = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    now = 0.0
    for n, at in enumerate(schedule, start=2):
        clock.advance(at - now - 0.01)
        now = at - 0.01
        assert len(await _copies(ls, n - 1)) == n - 1  # not yet
        clock.advance(0.01)
        now = at
        copies = await _copies(ls, n)
        assert len(copies) == n
        assert copies[-1].serialise() == first.serialise()
    assert core.third_party == []
    clock.advance(32.0 - now)
    assert core.third_party == [ThirdPartyOutcome(f"sip:bob@{DOMAIN}", 600, None)]
    (warned,) = events.third_party()
    assert (warned["log_level"].name, warned["aor"], warned["status"]) == (
        "warn",
        first.to.uri,
        408,
    )
    clock.advance(60)
    await deferLater(reactor, 0.1, lambda: None)
    assert len([m for m in ls.got if isinstance(m, Request)]) == len(schedule) + 1
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_a_refusal_stops_the_retransmissions_and_is_a_warning(
    cleanup: list[Any], events: Events
) -> None:
    ls = _udp(cleanup, Answering(auto=("REGISTER",), status=403))
    bob = _udp(cleanup, Endpoint())
    clock = task.Clock()
    core = _core(cleanup, ls, clock=clock)
    _register(bob, core, "bob", 600)
    await ls.wait(_is(method="REGISTER"))
    for _ in range(100):
        if core.third_party:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert core.third_party == [ThirdPartyOutcome(f"sip:bob@{DOMAIN}", 600, 403)]
    (warned,) = events.third_party()
    assert (warned["log_level"].name, warned["status"]) == ("warn", 403)
    clock.advance(40)
    await deferLater(reactor, 0.1, lambda: None)
    assert len([m for m in ls.got if isinstance(m, Request)]) == 1
    assert clock.getDelayedCalls() == []  # Timer K ended it


@pytest_twisted.ensureDeferred
async def test_without_a_list_server_nothing_changes(cleanup: list[Any], events: Events) -> None:
    ue = _udp(cleanup, Endpoint())
    bob = _udp(cleanup, Endpoint())
    core = _core(cleanup, None)
    _register(bob, core, "bob", 600)
    await bob.wait(_is(status=200, call="reg-bob"))
    _message(ue, core, PSI, "no-list")
    answer = await ue.wait(_is(call="no-list"))
    assert answer.status == 404
    assert core.third_party == [] and events.third_party() == []


# -- e2ae core as a real process -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_e2ae_core_routes_a_psi_to_the_list_server_given_on_its_command_line(
    cleanup: list[Any],
) -> None:
    import os
    import subprocess
    import types

    from twisted.internet import threads

    from tests.conftest import REPO, e2ae_command

    ls = _udp(cleanup, Answering(auto=("REGISTER", "MESSAGE"), status=202))
    ue = _udp(cleanup, Endpoint())
    proc = subprocess.Popen(
        [
            *e2ae_command(),
            "core",
            "--list-server",
            f"127.0.0.1:{ls.port}",
            "--list-psi",
            PSI,
            "--known-user",
            f"sip:erin@{DOMAIN}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        text=True,
    )
    cleanup.append(lambda: proc.poll() is not None or (proc.terminate(), proc.wait(10)))
    assert proc.stdout is not None
    first = await threads.deferToThread(proc.stdout.readline)
    port = int(first.split("sip=127.0.0.1:", 1)[1].split()[0])

    at = types.SimpleNamespace(port=port)  # what _message needs of a core
    _message(ue, at, PSI, "cli-group")  # type: ignore[arg-type]
    got = await ls.wait(_is(method="MESSAGE", call="cli-group"))
    assert got.uri == PSI and got.body == BODY
    await ue.wait(_is(status=202, call="cli-group"))
    _message(ue, at, f"sip:erin@{DOMAIN}", "cli-erin")  # type: ignore[arg-type]
    await ue.wait(_is(status=480, call="cli-erin"))


def test_e2ae_core_list_psi_needs_the_list_server() -> None:
    from tests.conftest import run_e2ae

    got = run_e2ae(["core", "--list-psi", PSI])
    assert got.returncode == 2
    assert got.stderr.decode().strip() == "e2ae core: --list-psi needs --list-server"


@pytest_twisted.ensureDeferred
async def test_an_invite_to_a_conference_uri_goes_to_the_focus(cleanup: list[Any]) -> None:
    focus = _udp(cleanup, Answering(auto=("INVITE",), status=200))
    ue = _udp(cleanup, Endpoint())
    conf = f"sip:conf1@{DOMAIN}"
    core = _core(
        cleanup,
        None,
        conference_server=("127.0.0.1", focus.port),
        conference_uris=frozenset({conf}),
    )
    _message(ue, core, conf, "to-conf", method="INVITE")
    got = await focus.wait(_is(method="INVITE", call="to-conf"))
    assert got.uri == conf
    assert got.get_all("Route") == [f"<sip:focus@127.0.0.1:{focus.port};lr>"]
    assert got.get_all("Record-Route") == [f"<sip:127.0.0.1:{core.port};lr>"]
    await ue.wait(_is(status=200, call="to-conf"))
    # another URI is not the focus's
    _message(ue, core, f"sip:conf2@{DOMAIN}", "not-conf", method="INVITE")
    await ue.wait(_is(status=404, call="not-conf"))
