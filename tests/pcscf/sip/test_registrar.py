"""Registration state: contacts per AOR and flow, mechanisms, expiry (time as a parameter)."""

from __future__ import annotations

import pytest

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.message import Request, Response, parse_datagram
from pcscf.sip.registrar import Flow, Registrar, read_register
from pcscf.sip.uri import SipUri

FLOW = Flow("udp", "192.0.2.10", 40000)


def _msg(text: str) -> Request | Response:
    return parse_datagram((text.strip().replace("\n", "\r\n") + "\r\n\r\n").encode())


def _register(contact: str, expires: str = "", security: str = "msrp-tls;mediasec") -> Request:
    msg = _msg(
        f"""REGISTER sip:ims.test SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bK1
From: <sip:alice@ims.test>;tag=1
To: <sip:alice@ims.test>
Call-ID: r
CSeq: 1 REGISTER
Contact: {contact}
Security-Client: {security}
{expires}"""
    )
    assert isinstance(msg, Request)
    return msg


def _ok(contact: str) -> Response:
    msg = _msg(
        f"""SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.10:40000;branch=z9hG4bK1
From: <sip:alice@ims.test>;tag=1
To: <sip:alice@ims.test>;tag=2
Call-ID: r
CSeq: 1 REGISTER
{contact}"""
    )
    assert isinstance(msg, Response)
    return msg


def test_two_contacts_expiry_lookup_and_wildcard_removal() -> None:
    reg = Registrar()
    pending = read_register(
        _register("<sip:alice@192.0.2.10:40000>, <sip:alice@192.0.2.10:40001>"), FLOW, "f1"
    )
    kept = reg.apply(
        pending,
        _ok(
            "Contact: <sip:alice@192.0.2.10:40000>;expires=100, "
            "<sip:alice@192.0.2.10:40001>;expires=50, <sip:alice@198.51.100.1>;expires=70"
        ),
        now=10,
    )
    assert [(str(b.contact), b.expires_at) for b in kept] == [
        ("sip:alice@192.0.2.10:40000", 110),
        ("sip:alice@192.0.2.10:40001", 60),
    ]  # the third contact belongs to another device: not ours to keep
    assert reg.by_flow(FLOW, 20) is not None and reg.by_token("f1", 20) is not None
    assert reg.by_uri(SipUri.parse("sip:alice@192.0.2.10:40001"), 20) == kept[1]
    assert reg.by_uri(SipUri.parse("sip:alice@IMS.test"), 20) == kept[0]  # AOR: newest expiry
    assert [str(b.contact) for b in reg.expire(60)] == ["sip:alice@192.0.2.10:40001"]
    assert reg.by_flow(FLOW, 200) is None  # expired bindings are never returned
    wildcard = read_register(_register("*", "Expires: 0"), FLOW, "f1")
    reg.apply(wildcard, _ok(""), now=61)
    assert len(reg) == 0 and reg.by_token("f1", 61) is None


def test_non_2xx_changes_nothing_and_missing_contact_in_2xx_removes() -> None:
    reg = Registrar()
    pending = read_register(_register("<sip:alice@192.0.2.10:40000>"), FLOW, "f1")
    fail = _msg(
        "SIP/2.0 403 Forbidden\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\nCall-ID: r\nCSeq: 1 REGISTER"
        "\nTo: <sip:alice@ims.test>"
    )
    assert isinstance(fail, Response)
    assert reg.apply(pending, fail, 0) == [] and len(reg) == 0
    reg.apply(pending, _ok("Expires: 30\nContact: <sip:alice@192.0.2.10:40000>"), 0)
    (binding,) = list(reg)
    assert binding.expires_at == 30 and binding.mechanisms == {"msrp-tls"}
    reg.apply(pending, _ok(""), 1)
    assert len(reg) == 0


def test_wildcard_needs_expires_zero() -> None:
    with pytest.raises(RemoteSipError):
        read_register(_register("*", "Expires: 60"), FLOW, "f1")
