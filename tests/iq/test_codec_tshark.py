"""Every Iq message the profile produces, dissected by Wireshark's MEGACO dissector.

The encoded messages, framed with TPKT, go into a pcap with text2pcap (TCP, port 2944) and
tshark reads them back: each frame must decode as MEGACO with the right transaction id,
commands and termination ids, and no frame may carry a malformed or expert-error field."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iq import codec, samples, tpkt
from iq.codec import TransactionPending, TransactionReply, TransactionRequest
from tests.conftest import require_tool

pytestmark = pytest.mark.peer


def _hexdump(steps: list[samples.Step]) -> str:
    lines: list[str] = []
    for step in steps:
        packet = tpkt.frame(codec.encode(step.message))
        # text2pcap -D: "I" is inbound (towards the ALG on port 2944), "O" outbound
        lines.append("I" if step.direction == "agw->alg" else "O")
        for offset in range(0, len(packet), 16):
            chunk = packet[offset : offset + 16]
            lines.append(f"{offset:06x} " + " ".join(f"{b:02x}" for b in chunk))
    return "\n".join(lines) + "\n"


def _expected(step: samples.Step) -> tuple[str, str, str, str]:
    message = step.message
    if message.error is not None:
        return ("Error", "", "", str(message.error.code))
    (t,) = message.transactions
    kind = "Request" if isinstance(t, TransactionRequest) else "Reply"
    commands: list[str] = []
    terms: list[str] = []
    error = ""
    if isinstance(t, TransactionReply) and t.error is not None:
        error = str(t.error.code)
    if not isinstance(t, TransactionPending):
        for action in t.actions:
            if action.error is not None:
                error = str(action.error.code)
            for cmd in action.commands:
                commands.append(cmd.name)
                terms.append("WildCard all" if cmd.termination_id == "*" else cmd.termination_id)
    return (f"{kind} {t.transaction_id}", ";".join(commands), ";".join(terms), error)


def test_tshark_decodes_every_profile_message(tmp_path: Path) -> None:
    text2pcap = require_tool("text2pcap")
    tshark = require_tool("tshark")
    steps = samples.all_steps()
    dump = tmp_path / "iq.txt"
    dump.write_text(_hexdump(steps))
    pcap = tmp_path / "iq.pcapng"
    subprocess.run(
        [text2pcap, "-q", "-D", "-T", "40000,2944", str(dump), str(pcap)],
        check=True,
        capture_output=True,
    )
    fields = [
        "frame.protocols",
        "tpkt.length",
        "megaco.transaction",
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
    assert len(rows) == len(steps)
    for step, row in zip(steps, rows, strict=True):
        protocols, tpkt_length, kind, tid, commands, terms, error, malformed, severity, expert = row
        assert ":tcp:megaco:megaco" in protocols, (step.title, protocols)
        assert int(tpkt_length) == len(codec.encode(step.message)) + tpkt.HEADER_SIZE
        assert (malformed, severity, expert) == ("", "", ""), (step.title, row)
        want_kind, want_commands, want_terms, want_error = _expected(step)
        got_kind = kind if kind == "Error" else f"{kind} {tid}"
        assert (got_kind, commands, terms, error) == (
            want_kind,
            want_commands,
            want_terms,
            want_error,
        ), step.title
    # the SDP inside Local/Remote is dissected too: the fingerprints come out as sent
    sdp = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields", "-e", "sdp.media_attr"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"fingerprint:{samples.UE_FP.value}" in sdp
    assert f"fingerprint:{samples.AGW_FP.value}" in sdp
    assert "fingerprint:$" in sdp
