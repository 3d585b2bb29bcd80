"""pcscf.sip.uadialog: a user agent's dialog - confirmed by a 2xx (remote tag, route set
reversed, remote target), its in-dialog requests, and where they go."""

from __future__ import annotations

import pytest

from pcscf.sip import Request, make_response
from pcscf.sip.errors import RemoteSipError
from pcscf.sip.uadialog import UaDialog, confirm, in_dialog, new_branch, next_hop


def _dialog() -> UaDialog:
    return UaDialog("c1@x", "lt", "sip:conf@x", "sip:bob@x", "sip:bob@x")


def _invite() -> Request:
    headers = (
        ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKi"),
        ("From", "<sip:conf@x>;tag=lt"),
        ("To", "<sip:bob@x>"),
        ("Call-ID", "c1@x"),
        ("CSeq", "1 INVITE"),
        ("Record-Route", "<sip:127.0.0.1:5070;lr>"),
        ("Record-Route", "<sip:127.0.0.1:5080;lr>"),
    )
    return Request(headers, b"", "INVITE", "sip:bob@x")


def test_a_2xx_confirms_the_dialog_and_in_dialog_requests_follow_it() -> None:
    dialog = _dialog()
    ok = make_response(_invite(), 200, to_tag="rt", extra=[("Contact", "<sip:bob@127.0.0.9:7>")])
    confirm(dialog, ok)
    assert dialog.remote_tag == "rt" and dialog.remote_target == "sip:bob@127.0.0.9:7"
    assert dialog.route_set == ("<sip:127.0.0.1:5080;lr>", "<sip:127.0.0.1:5070;lr>")
    bye = in_dialog(dialog, "BYE", via=f"SIP/2.0/UDP 127.0.0.1:1;branch={new_branch()}")
    assert (bye.method, bye.uri, bye.cseq) == ("BYE", "sip:bob@127.0.0.9:7", (2, "BYE"))
    assert bye.to.tag == "rt" and bye.get_all("Route") == list(dialog.route_set)
    ack = in_dialog(dialog, "ACK", via="SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKa", cseq=1)
    assert ack.cseq == (1, "ACK") and dialog.cseq == 2
    assert next_hop(dialog) == ("127.0.0.1", 5080)


def test_without_routes_the_next_hop_is_the_default_or_the_target() -> None:
    dialog = _dialog()
    dialog.remote_target = "sip:bob@127.0.0.9:7"
    assert next_hop(dialog, ("127.0.0.1", 5060)) == ("127.0.0.1", 5060)
    assert next_hop(dialog) == ("127.0.0.9", 7)


def test_a_2xx_without_a_to_tag_is_refused() -> None:
    with pytest.raises(RemoteSipError, match="To tag"):
        confirm(_dialog(), make_response(_invite(), 200))
