"""The core stub's registrar and S-CSCF routing (pure), fed with what the UE user agent builds
and read back with the P-CSCF's SIP parser."""

from __future__ import annotations

import pytest

from lab.core import CoreStub, Deliver, Send
from lab.ue import UserAgent
from pcscf.sip import Request, Response, parse_datagram

CORE = ("127.0.0.1", 5070)
PCSCF_CORE = ("127.0.0.1", 5061)
PATH = "<sip:term@127.0.0.1:5061;lr>"


def _wire(message: Request | Response) -> Request | Response:
    parsed = parse_datagram(message.serialise())
    assert isinstance(parsed, Request | Response)
    return parsed


def _via_pcscf(request: Request, branch: str = "z9hG4bKpcscf1") -> Request:
    """What the P-CSCF does on the way to the core: its own Route entry removed, its Via on top,
    its Path for a REGISTER."""
    request = request.evolve(headers=request.without("route"))
    headers = request.prepending("Via", f"SIP/2.0/UDP 127.0.0.1:5061;branch={branch}")
    if request.method == "REGISTER":
        headers = (*headers, ("Path", PATH))
    return request.evolve(headers=headers)


def _register(core: CoreStub, name: str, port: int, now: float = 0.0) -> Response:
    ua = UserAgent(f"sip:{name}@ims.test", "127.0.0.1", port, ("127.0.0.1", 5060))
    [action] = core.handle(_wire(_via_pcscf(ua.register())), PCSCF_CORE, now)
    assert isinstance(action, Send) and action.to == PCSCF_CORE
    response = _wire(action.message)
    assert isinstance(response, Response)
    return response


def test_register_stores_path_and_echoes_it() -> None:
    core = CoreStub(CORE)
    ok = _register(core, "bob", 5092)
    assert ok.status == 200 and ok.values("path") == [PATH]
    assert ok.get("contact") == "<sip:bob@127.0.0.1:5092;transport=udp>;expires=600"
    assert ok.to.tag is not None
    binding = core.binding("sip:bob@ims.test", now=1.0)
    assert binding is not None and binding.path == (PATH,)
    assert core.binding("sip:bob@ims.test", now=601.0) is None


def test_invite_for_a_registered_aor_goes_through_the_path() -> None:
    core = CoreStub(CORE)
    _register(core, "bob", 5092)
    alice = UserAgent("sip:alice@ims.test", "127.0.0.1", 5090, ("127.0.0.1", 5060))
    invite, _ = alice.invite("sip:bob@ims.test", b"v=0\r\n")
    incoming = _via_pcscf(invite, "z9hG4bKorig")
    [action] = core.handle(_wire(incoming), PCSCF_CORE, 2.0)
    assert isinstance(action, Send) and action.to == ("127.0.0.1", 5061)
    out = _wire(action.message)
    assert isinstance(out, Request)
    assert out.uri == "sip:bob@127.0.0.1:5092;transport=udp"
    assert out.values("route") == [PATH]
    assert out.top_via.sent_by == "127.0.0.1:5070" and len(out.vias) == 3
    assert out.get("max-forwards") == "69" and out.body == b"v=0\r\n"
    # the CANCEL of that INVITE gets the same branch (stateless proxy)
    cancel = incoming.evolve(method="CANCEL", body=b"")
    [again] = core.handle(_wire(cancel), PCSCF_CORE, 2.0)
    assert isinstance(again, Send) and isinstance(again.message, Request)
    assert again.message.top_via.branch == out.top_via.branch

    # the 200 from the terminating side comes back through us
    response = Response(out.headers, b"", 200, "OK")
    [back] = core.handle(_wire(response), PCSCF_CORE, 3.0)
    assert isinstance(back, Send) and back.to == ("127.0.0.1", 5061)
    assert isinstance(back.message, Response)
    assert back.message.top_via.branch == "z9hG4bKorig"
    # a response whose top Via is not ours is dropped
    assert core.handle(_wire(back.message), PCSCF_CORE, 3.0) == []


def test_local_peer_unknown_target_and_hop_limit() -> None:
    core = CoreStub(CORE, local=frozenset({"sip:msrp-peer@core.test"}))
    alice = UserAgent("sip:alice@ims.test", "127.0.0.1", 5090, ("127.0.0.1", 5060))
    invite, _ = alice.invite("sip:msrp-peer@core.test", b"")
    [deliver] = core.handle(_wire(_via_pcscf(invite)), PCSCF_CORE, 0.0)
    assert isinstance(deliver, Deliver) and deliver.aor == "sip:msrp-peer@core.test"
    nobody, _ = alice.invite("sip:nobody@ims.test", b"")
    [missing] = core.handle(_wire(_via_pcscf(nobody)), PCSCF_CORE, 0.0)
    assert isinstance(missing, Send) and isinstance(missing.message, Response)
    assert missing.message.status == 404 and missing.to == PCSCF_CORE
    _register(core, "bob", 5092)
    looping, _ = alice.invite("sip:bob@ims.test", b"")
    looping = looping.evolve(headers=looping.replacing("Max-Forwards", ["0"]))
    [too_many] = core.handle(_wire(_via_pcscf(looping)), PCSCF_CORE, 0.0)
    assert isinstance(too_many.message, Response) and too_many.message.status == 483  # type: ignore[union-attr]


@pytest.mark.parametrize("ours_first", [True, False])
def test_in_dialog_request_follows_its_route(ours_first: bool) -> None:
    core = CoreStub(CORE)
    routes = ["<sip:127.0.0.1:5070;lr>"] if ours_first else []
    routes.append("<sip:127.0.0.1:5062;lr;e2ae=term>")
    bye = Request(
        (
            ("Via", "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKbye"),
            ("Max-Forwards", "70"),
            *(("Route", r) for r in routes),
            ("From", "<sip:alice@ims.test>;tag=a"),
            ("To", "<sip:bob@ims.test>;tag=b"),
            ("Call-ID", "c1"),
            ("CSeq", "2 BYE"),
        ),
        b"",
        "BYE",
        "sip:bob@127.0.0.1:5092",
    )
    [action] = core.handle(_wire(bye), PCSCF_CORE, 0.0)
    assert isinstance(action, Send) and action.to == ("127.0.0.1", 5062)
    assert isinstance(action.message, Request)
    assert action.message.values("route") == ["<sip:127.0.0.1:5062;lr;e2ae=term>"]
    assert action.message.uri == "sip:bob@127.0.0.1:5092"


def test_malformed_request_answered_with_its_status() -> None:
    core = CoreStub(CORE)
    bad = Request(
        (
            ("Via", "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKx"),
            ("From", "<sip:a@x>;tag=1"),
            ("To", "<sip:b@x>"),
            ("Call-ID", "c"),
            ("CSeq", "1 REGISTER"),
        ),
        b"",
        "REGISTER",
        "sip:x",
    )
    bad = bad.evolve(headers=bad.replacing("To", ["<tel:+1>"]))
    [answer] = core.handle(bad, PCSCF_CORE, 0.0)
    assert isinstance(answer, Send) and isinstance(answer.message, Response)
    assert answer.message.status == 400
