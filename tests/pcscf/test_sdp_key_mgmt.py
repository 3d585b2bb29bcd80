"""``a=key-mgmt:mikey <base64>`` (RFC 4567) in the SDP model, and the e2ae rewrite passing
KMS-protected streams through byte for byte, with a real MIKEY-TICKET TRANSFER_INIT."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kms.client import request_init
from mikey import decode
from mikey.constants import DataType, IdRole, IdType, MacAlg
from mikey.message import EmptyMap, message
from mikey.payloads import (
    IdWithRole,
    Rand,
    Ticket,
    TicketPolicy,
    Timestamp,
    Verification,
    ntp_from_unix,
)
from pcscf.errors import SdpError
from pcscf.policy import Policy
from pcscf.rewrite import deterministic_reservations, plan_offer, rewrite_offer
from pcscf.sdp import KeyMgmt, SessionDescription
from tests.pcscf.test_rewrite import AGW_FP, UE_FP


def _transfer_init() -> bytes:
    """A TRANSFER_INIT as an Initiator puts it in its INVITE (RFC 6043 §4, RFC 4567)."""
    return message(
        DataType.TRANSFER_INIT,
        0x1234,
        (
            Timestamp.ntp_utc(1_800_000_000.0),
            Rand(b"\x5a" * 16),
            IdWithRole(IdRole.IDRI, IdType.URI, b"sip:alice@e2ae.lab"),
            IdWithRole(IdRole.IDRR, IdType.URI, b"sip:bob@e2ae.lab"),
            Ticket(TicketPolicy(2), bytes(range(32))),
            Verification(MacAlg.HMAC_SHA_256_256, b"\x77" * 32),
        ),
        cs_map=EmptyMap(1),
    ).encode()


MIKEY = _transfer_init()
B64 = base64.b64encode(MIKEY).decode()


def _sdp(session_kmgmt: str = "", media_kmgmt: str = "", e2ae: bool = False) -> str:
    body = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    if session_kmgmt:
        body += f"a=key-mgmt:{session_kmgmt}\r\n"
    body += "m=message 7394 TCP/TLS/MSRP *\r\na=path:msrps://192.0.2.10:7394/kms;tcp\r\n"
    body += f"a=setup:active\r\n{UE_FP.attribute()}\r\n"
    if media_kmgmt:
        body += f"a=key-mgmt:{media_kmgmt}\r\n"
    if e2ae:
        body += "a=3ge2ae:requested\r\n"
    body += "m=audio 5004 RTP/AVP 0\r\n"
    return body


def test_session_and_media_level_values_are_read_as_mikey_messages() -> None:
    sdp = SessionDescription.parse(_sdp(session_kmgmt=f"mikey {B64}"))
    (session,) = sdp.key_mgmt()
    assert session == KeyMgmt("mikey", MIKEY)
    assert decode(session.data).data_type is DataType.TRANSFER_INIT
    assert sdp.key_mgmt(0) == [session]  # inherited by the stream
    assert sdp.key_mgmt(1) == [session]


def test_media_level_overrides_session_level() -> None:
    other = base64.b64encode(b"\x01\x0f\x00").decode()
    sdp = SessionDescription.parse(_sdp(session_kmgmt=f"mikey {other}", media_kmgmt=f"mikey {B64}"))
    assert sdp.key_mgmt(0) == [KeyMgmt("mikey", MIKEY)]
    assert sdp.key_mgmt(1) == [KeyMgmt("mikey", b"\x01\x0f\x00")]


def test_value_is_what_it_parsed() -> None:
    parsed = KeyMgmt.parse(f"MIKEY {B64}")
    assert parsed.protocol == "mikey" and parsed.value() == f"mikey {B64}"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("mikey", "expected"),
        (f"mi key {B64}", "not base64"),
        ("mikey AQ=", "not base64"),
        ("mikey !!!!", "not base64"),
        ("mikey ", "expected"),
        ('m"ikey AQ==', "expected"),
    ],
)
def test_bad_values_name_their_line(value: str, words: str) -> None:
    sdp = SessionDescription.parse(_sdp(media_kmgmt=value))
    with pytest.raises(SdpError) as caught:
        sdp.key_mgmt(0)
    assert caught.value.line == 10 and words in caught.value.reason


@given(st.binary(min_size=1, max_size=300), st.sampled_from(["mikey", "MIKEY", "x-kmp"]))
def test_any_data_round_trips(data: bytes, protocol: str) -> None:
    value = f"{protocol} {base64.b64encode(data).decode()}"
    sdp = SessionDescription.parse(_sdp(media_kmgmt=value))
    assert sdp.key_mgmt(0) == [KeyMgmt(protocol.lower(), data)]
    assert KeyMgmt.parse(value).value() == f"{protocol.lower()} {base64.b64encode(data).decode()}"


def _rewrite(step: str, text: str) -> tuple[object, SessionDescription]:
    sdp = SessionDescription.parse(text)
    plan = plan_offer(step, sdp, ("msrp-tls", "bfcp-tls"), Policy())  # type: ignore[arg-type]
    reservations = deterministic_reservations(
        plan,
        access_address="198.51.100.1",
        core_address="203.0.113.1",
        fingerprint=AGW_FP,
        port_base=40000,
    )
    return plan, rewrite_offer(sdp, plan, reservations).sdp


@pytest.mark.parametrize("step", ["orig-offer", "term-offer"])
@pytest.mark.parametrize("level", ["session", "media"])
def test_a_kms_stream_passes_the_rewrite_byte_for_byte(step: str, level: str) -> None:
    value = f"mikey {B64}"
    text = _sdp(session_kmgmt=value) if level == "session" else _sdp(media_kmgmt=value)
    plan, out = _rewrite(step, text)
    assert plan.streams[0].treatment == "e2e"  # type: ignore[attr-defined]
    assert out.serialise() == SessionDescription.parse(text).serialise()
    assert out.key_mgmt(0) == [KeyMgmt("mikey", MIKEY)]


def test_a_real_ticket_request_survives_the_rewrite_too() -> None:
    request = request_init(
        "sip:alice@e2ae.lab",
        bytes(16),
        ("sip:bob@e2ae.lab",),
        1_800_000_000.0,
        kms="kms.e2ae.lab",
        csb_id=7,
    ).encode()
    value = f"mikey {base64.b64encode(request).decode()}"
    _, out = _rewrite("orig-offer", _sdp(media_kmgmt=value))
    assert decode(out.key_mgmt(0)[0].data).encode() == request


def test_timestamp_helper_matches_the_codec() -> None:
    # The TRANSFER_INIT above carries the NTP time of its Unix time.
    stamp = decode(MIKEY).payloads[0]
    assert isinstance(stamp, Timestamp) and stamp.value == ntp_from_unix(1_800_000_000.0)
