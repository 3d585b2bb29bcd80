"""``a=key-mgmt:mikey`` as Wireshark reads it: a SIP INVITE whose SDP carries our MIKEY
messages at session and media level, written into a pcap and dissected by tshark: no
malformed field, and the values we put in. Wireshark (4.0) dissects the MIKEY message of a
session-level key-mgmt; a media-level one it shows as the attribute's text, which must be
ours and decode to our message."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from mikey import decode, samples
from mikey.message import Message
from mikey.payloads import Kemac, Rand
from pcscf.sdp import SessionDescription
from tests.conftest import require_tool

pytestmark = pytest.mark.peer

SESSION_MSG = samples.psk_init()
MEDIA_MSG = samples.psk_verify()


def _invite() -> bytes:
    session = base64.b64encode(SESSION_MSG.encode()).decode()
    media = base64.b64encode(MEDIA_MSG.encode()).decode()
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"a=key-mgmt:mikey {session}\r\n"
        "m=message 7394 TCP/TLS/MSRP *\r\na=path:msrps://127.0.0.1:7394/kms;tcp\r\n"
        f"a=key-mgmt:mikey {media}\r\n"
    ).encode()
    assert SessionDescription.parse(sdp).key_mgmt(0)[0].data == MEDIA_MSG.encode()
    head = (
        "INVITE sip:bob@e2ae.lab SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKkms1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@e2ae.lab>;tag=a\r\nTo: <sip:bob@e2ae.lab>\r\n"
        "Call-ID: kms-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5060>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
    )
    return head.encode() + sdp


FIELDS = [
    "sip.Method",
    "sdp.key_mgmt.kmpid",
    "sdp.key_mgmt.data",
    "sdp.media_attribute.value",
    "mikey.type",
    "mikey.csb_id",
    "mikey.rand.data",
    "mikey.key.data",
    "_ws.malformed",
    "_ws.expert.message",
]


def _rands(m: Message) -> list[str]:
    return [p.rand.hex() for p in m.payloads if isinstance(p, Rand)]


def test_tshark_dissects_the_mikey_in_our_sdp(tmp_path: Path) -> None:
    text2pcap = require_tool("text2pcap")
    tshark = require_tool("tshark")
    data = _invite()
    dump = tmp_path / "invite.txt"
    lines = ["I"] + [
        f"{o:06x} " + " ".join(f"{b:02x}" for b in data[o : o + 16])
        for o in range(0, len(data), 16)
    ]
    dump.write_text("\n".join(lines) + "\n")
    pcap = tmp_path / "invite.pcapng"
    subprocess.run(
        [text2pcap, "-q", "-D", "-u", "40000,5060", str(dump), str(pcap)],
        check=True,
        capture_output=True,
    )
    args = [tshark, "-r", str(pcap), "-T", "fields", "-E", "separator=|"]
    args += ["-E", "occurrence=a", "-E", "aggregator=;"]
    for field in FIELDS:
        args += ["-e", field]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    (row,) = [line.split("|") for line in out.splitlines() if line.strip()]
    got = dict(zip(FIELDS, row, strict=True))
    assert got["sip.Method"] == "INVITE"
    assert got["_ws.malformed"] == "" and got["_ws.expert.message"] == "", got
    assert got["sdp.key_mgmt.kmpid"] == "mikey"
    assert got["sdp.key_mgmt.data"] == SESSION_MSG.encode().hex()
    assert got["mikey.type"] == str(int(SESSION_MSG.data_type))
    assert got["mikey.csb_id"] == f"0x{SESSION_MSG.header.csb_id:08x}"
    assert got["mikey.rand.data"] == ";".join(_rands(SESSION_MSG))
    (kemac,) = [p for p in SESSION_MSG.payloads if isinstance(p, Kemac)]
    assert got["mikey.key.data"] == ";".join(k.key.hex() for k in kemac.key_data())
    media = got["sdp.media_attribute.value"].split(";")[-1]
    assert media == f"mikey {base64.b64encode(MEDIA_MSG.encode()).decode()}"
    assert decode(base64.b64decode(media.split()[1])) == MEDIA_MSG
