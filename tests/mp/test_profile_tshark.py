"""Every Mp message, framed with TPKT, dissected by Wireshark's MEGACO dissector: each frame
decodes as MEGACO with its transaction id, command and termination id, and none carries a
malformed or expert-error field. (The pcap uses TCP port 2944, where tshark looks for
MEGACO text.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iq import codec, tpkt
from iq.codec import ErrorDescriptor, Message, TransactionReply, TransactionRequest
from mp import profile
from tests.conftest import require_tool
from tests.mp.test_profile import CASES

pytestmark = pytest.mark.peer


def _messages() -> list[tuple[bool, Message]]:
    """(from the MRFP?, message) for every request and reply of the profile, and an error."""
    out: list[tuple[bool, Message]] = []
    for tid, (request, reply) in enumerate(CASES, start=1):
        from_mrfp = isinstance(request, profile.NotifyRequest | profile.ServiceChangeRequest)
        mids = ("<mrfp>", "<mrfc>") if from_mrfp else ("<mrfc>", "<mrfp>")
        out.append(
            (
                from_mrfp,
                Message(mids[0], (TransactionRequest(tid, profile.encode_request(request)),)),
            )
        )
        out.append(
            (
                not from_mrfp,
                Message(mids[1], (TransactionReply(tid, profile.encode_reply(request, reply)),)),
            )
        )
    error = TransactionReply(99, error=ErrorDescriptor(411, "context 999 unknown"))
    out.append((True, Message("<mrfp>", (error,))))
    return out


def test_tshark_decodes_every_mp_message(tmp_path: Path) -> None:
    text2pcap = require_tool("text2pcap")
    tshark = require_tool("tshark")
    messages = _messages()
    lines: list[str] = []
    for from_mrfp, message in messages:
        packet = tpkt.frame(codec.encode(message))
        lines.append("I" if from_mrfp else "O")
        for offset in range(0, len(packet), 16):
            chunk = packet[offset : offset + 16]
            lines.append(f"{offset:06x} " + " ".join(f"{b:02x}" for b in chunk))
    dump = tmp_path / "mp.txt"
    dump.write_text("\n".join(lines) + "\n")
    pcap = tmp_path / "mp.pcapng"
    subprocess.run(
        [text2pcap, "-q", "-D", "-T", "40000,2944", str(dump), str(pcap)],
        check=True,
        capture_output=True,
    )
    fields = [
        "frame.protocols",
        "megaco.transid",
        "megaco.command",
        "megaco.termid",
        "megaco.error_code",
        "_ws.malformed",
        "_ws.expert.severity",
        "_ws.expert.message",
    ]
    args = [tshark, "-r", str(pcap), "-T", "fields"]
    args += ["-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=;"]
    for field in fields:
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    rows = [line.split("|") for line in result.stdout.splitlines()]
    assert len(rows) == len(messages)
    for (_, message), row in zip(messages, rows, strict=True):
        protocols, tid, commands, terms, error, malformed, severity, expert = row
        (t,) = message.transactions
        assert ":tcp:megaco" in protocols, (message, protocols)
        assert (malformed, severity, expert) == ("", "", ""), (message, row)
        assert tid == str(t.transaction_id)
        if isinstance(t, TransactionReply) and t.error is not None:
            assert error == str(t.error.code)
            continue
        assert isinstance(t, TransactionRequest | TransactionReply)
        (action,) = t.actions
        (cmd,) = action.commands
        assert (commands, terms) == (cmd.name, cmd.termination_id), row
    # the SDP inside Local/Remote is dissected too
    sdp = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields", "-e", "sdp.media_attr", "-e", "sdp.media"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "path:msrp://192.0.2.10:5000/a1;tcp" in sdp
    assert "floorid:11" in sdp
    assert "TCP/TLS/MSRP" in sdp
