"""Our MIKEY encodings, dissected by Wireshark's MIKEY dissector.

The messages go into a pcap as UDP to port 2269 (which tshark decodes as MIKEY) via
text2pcap; tshark must find no malformed field and must read back the values we encoded.
Wireshark's dissector knows RFC 3830 and the IDR payload (RFC 6043/6509) but not TP, TICKET,
RANDR, TR or the GENERIC-ID map, so the messages checked here keep to what it knows: the
RFC 3830 samples and a ticket-exchange message built from payloads it dissects. It dissects
the key data sub-payloads of a NULL-encrypted KEMAC only in a Pre-shared message, and only
the first of them: the PSK messages here carry one key each, and for the others the raw Encr
data is compared."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mikey import samples
from mikey.constants import DataType, ErrorNo, GenExtType, IdRole, IdType, KeyType, MacAlg
from mikey.message import Message, message
from mikey.payloads import (
    Err,
    GeneralExtension,
    IdWithRole,
    Kemac,
    KeyData,
    KvInterval,
    KvSpi,
    Rand,
    Verification,
)
from tests.conftest import require_tool

pytestmark = pytest.mark.peer


def _resolve_resp_like() -> Message:
    """A RESOLVE_RESP built from payloads Wireshark 4.0 dissects (IDR, KEMAC, GEN EXT, V)."""
    kemac = Kemac.plain(
        (
            KeyData(KeyType.TGK, samples.TGK, kv=KvSpi(samples.SPI)),
            KeyData(
                KeyType.TEK_SALT, b"\x01" * 16, salt=b"\x02" * 14, kv=KvInterval(b"\x00", b"\xff")
            ),
        ),
        MacAlg.HMAC_SHA_1_160,
    )
    return message(
        DataType.RESOLVE_RESP,
        0x0BADCAFE,
        (
            samples.T,
            Rand(b"\x42" * 16),
            IdWithRole(IdRole.IDRKMS, IdType.URI, b"https://kms.example.net"),
            IdWithRole(IdRole.IDRR, IdType.NAI, b"bob@example.net"),
            kemac,
            GeneralExtension(GenExtType.VENDOR_ID, b"e2ae"),
            Err(ErrorNo.INVALID_SP),
            Verification(MacAlg.HMAC_SHA_1_160, b"\x33" * 20),
        ),
        cs_map=samples.SRTP_MAP,
    )


def _psk_init_tek_salt() -> Message:
    key = KeyData(
        KeyType.TEK_SALT, b"\x0a" * 16, salt=b"\x0b" * 14, kv=KvInterval(b"\x00", b"\xff")
    )
    return message(
        DataType.PSK_INIT,
        7,
        (samples.T, samples.RAND, Kemac.plain((key,), MacAlg.HMAC_SHA_1_160, b"\x0c" * 20)),
        cs_map=samples.SRTP_MAP,
    )


MESSAGES = [
    samples.psk_init(),
    _psk_init_tek_salt(),
    samples.psk_verify(),
    samples.error(),
    _resolve_resp_like(),
]

FIELDS = [
    "mikey.type",
    "mikey.csb_id",
    "mikey.next_payload",
    "mikey.srtp_id.ssrc",
    "mikey.rand.data",
    "mikey.id.role",
    "mikey.id.type",
    "mikey.id.data",
    "mikey.key.type",
    "mikey.key.kv",
    "mikey.key.data",
    "mikey.key.salt",
    "mikey.key.kv.spi",
    "mikey.key.kv.from",
    "mikey.key.kv.to",
    "mikey.kemac.key_data",
    "mikey.kemac.mac",
    "mikey.v.ver_data",
    "mikey.err.no",
    "mikey.ext.type",
    "mikey.sp.param.type",
    "_ws.malformed",
    "_ws.expert.message",
]


def _hexdump(messages: list[Message]) -> str:
    lines: list[str] = []
    for m in messages:
        data = m.encode()
        lines.append("I")
        for offset in range(0, len(data), 16):
            chunk = data[offset : offset + 16]
            lines.append(f"{offset:06x} " + " ".join(f"{b:02x}" for b in chunk))
    return "\n".join(lines) + "\n"


def _expected(m: Message) -> dict[str, str]:
    from mikey.message import SrtpIdMap
    from mikey.payloads import Id

    chain = [p.TYPE for p in m.payloads]
    kemacs = [p for p in m.payloads if isinstance(p, Kemac)]
    dissected = m.data_type is DataType.PSK_INIT
    keys = [k for kemac in kemacs for k in kemac.key_data()] if dissected else []
    idrs = [p for p in m.payloads if isinstance(p, IdWithRole | Id)]
    ssrcs = m.header.cs_map.entries if isinstance(m.header.cs_map, SrtpIdMap) else ()
    # The HDR's Next payload, then each payload's (Wireshark shows none for the key data
    # sub-payloads inside a KEMAC).
    nexts = [chain[0], *chain[1:], 0]
    return {
        "mikey.type": str(int(m.data_type)),
        "mikey.csb_id": f"0x{m.header.csb_id:08x}",
        "mikey.srtp_id.ssrc": ";".join(f"0x{e.ssrc:08x}" for e in ssrcs),
        "mikey.rand.data": ";".join(p.rand.hex() for p in m.payloads if isinstance(p, Rand)),
        "mikey.id.role": ";".join(str(p.role) for p in idrs if isinstance(p, IdWithRole)),
        "mikey.id.type": ";".join(str(p.id_type) for p in idrs),
        "mikey.id.data": ";".join(p.data.decode() for p in idrs),
        "mikey.key.type": ";".join(str(int(k.key_type)) for k in keys),
        "mikey.key.kv": ";".join(str(int(k.kv_type)) for k in keys),
        "mikey.key.data": ";".join(k.key.hex() for k in keys),
        "mikey.key.salt": ";".join(k.salt.hex() for k in keys if k.salt is not None),
        "mikey.key.kv.spi": ";".join(k.kv.spi.hex() for k in keys if isinstance(k.kv, KvSpi)),
        "mikey.key.kv.from": ";".join(
            k.kv.valid_from.hex() for k in keys if isinstance(k.kv, KvInterval)
        ),
        "mikey.key.kv.to": ";".join(
            k.kv.valid_to.hex() for k in keys if isinstance(k.kv, KvInterval)
        ),
        "mikey.kemac.key_data": "" if dissected else ";".join(k.encr_data.hex() for k in kemacs),
        "mikey.kemac.mac": ";".join(k.mac.hex() for k in kemacs),
        "mikey.v.ver_data": ";".join(
            p.ver_data.hex() for p in m.payloads if isinstance(p, Verification)
        ),
        "mikey.err.no": ";".join(str(p.error_no) for p in m.payloads if isinstance(p, Err)),
        "mikey.ext.type": ";".join(
            str(p.ext_type) for p in m.payloads if isinstance(p, GeneralExtension)
        ),
        "_ws.malformed": "",
        "_ws.expert.message": "",
        "mikey.next_payload": ";".join(str(int(n)) for n in nexts),
    }


def test_tshark_reads_back_what_we_encoded(tmp_path: Path) -> None:
    text2pcap = require_tool("text2pcap")
    tshark = require_tool("tshark")
    dump = tmp_path / "mikey.txt"
    dump.write_text(_hexdump(MESSAGES))
    pcap = tmp_path / "mikey.pcapng"
    subprocess.run(
        [text2pcap, "-q", "-D", "-u", "40000,2269", str(dump), str(pcap)],
        check=True,
        capture_output=True,
    )
    args = [tshark, "-r", str(pcap), "-d", "udp.port==2269,mikey", "-T", "fields"]
    args += ["-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=;"]
    for field in FIELDS:
        args += ["-e", field]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    assert len(rows) == len(MESSAGES)
    for m, row in zip(MESSAGES, rows, strict=True):
        got = dict(zip(FIELDS, row, strict=True))
        want = _expected(m)
        assert got["_ws.malformed"] == "" and got["_ws.expert.message"] == "", got
        for field, value in want.items():
            assert got[field] == value, (field, m.data_type.name)
    assert rows[0][FIELDS.index("mikey.sp.param.type")] == ";".join(
        str(p.param_type) for p in samples.SRTP_POLICY.params
    )
