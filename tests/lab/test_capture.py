"""``e2ae demo --pcap`` as a real process, read back with tshark and the demo's key log; and
the pure pieces of :mod:`lab.capture`."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.capture import CaptureError, keylog_for, tshark_command
from tests.conftest import run_e2ae


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def test_keylog_beside_the_capture() -> None:
    assert keylog_for(Path("/x/demo.pcap")) == Path("/x/demo.keys")


def test_tshark_command_names_the_key_log_and_the_ports() -> None:
    cmd = shlex.split(
        tshark_command(Path("a.pcap"), Path("a.keys"), iq_port=2944, msrp_ports=[7, 7, 5])
    )
    assert cmd[:3] == ["tshark", "-r", "a.pcap"]
    assert "tls.keylog_file:a.keys" in cmd and "tcp.port==2944,tls" in cmd
    assert [a for a in cmd if a.endswith(",msrp")] == ["tcp.port==5,msrp", "tcp.port==7,msrp"]


def test_missing_dumpcap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import lab.capture

    monkeypatch.setattr(lab.capture.shutil, "which", lambda name: None)
    monkeypatch.setattr(lab.capture.os, "access", lambda path, mode: False)
    with pytest.raises(CaptureError, match="dumpcap not found"):
        lab.capture.find_dumpcap()


@pytest.mark.peer
@pytest.mark.skipif(not (_tool("dumpcap") and _tool("tshark")), reason="needs dumpcap and tshark")
def test_demo_capture_decrypts_with_its_key_log(tmp_path: Path) -> None:
    pcap = tmp_path / "demo.pcap"
    done = run_e2ae(["demo", "--json", "--pcap", str(pcap)], timeout=180)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    info = summary["pcap"]
    assert info["file"] == str(pcap) and info["keylog"] == str(tmp_path / "demo.keys")
    assert pcap.stat().st_size > 1000 and (tmp_path / "demo.keys").stat().st_mode & 0o077 == 0
    command = shlex.split(info["tshark"])
    command[0] = str(_tool("tshark"))

    def fields(*names: str, display: str | None = None) -> list[list[str]]:
        args = [*command, "-T", "fields", *(a for n in names for a in ("-e", n))]
        if display:
            args += ["-Y", display]
        out = subprocess.run(args, capture_output=True, check=True, timeout=120).stdout
        return [line.split("\t") for line in out.decode().splitlines()]

    sip = {row[0] for row in fields("sip.Method", display="sip")}
    assert {"REGISTER", "INVITE", "ACK", "BYE"} <= sip
    # the plain core leg, decoded as MSRP by the decode-as options
    assert "SEND" in {row[0] for row in fields("msrp.method", display="msrp")}
    # the access legs and Iq, decrypted with the key log
    plain = b"".join(bytes.fromhex(row[0]) for row in fields("data.data", display="tls && data"))
    assert b"MSRP " in plain and b" SEND\r\n" in plain
    # Iq: H.248 text in TPKT frames
    assert b"MEGACO/3 " in plain and b"ServiceChange" in plain
    # immediate messages: SIP MESSAGE whose multipart Wireshark takes apart into the MIKEY
    # TRANSFER_INIT and the CMS object, with nothing malformed
    assert "MESSAGE" in sip
    parts = fields("frame.protocols", display='sip.Method == "MESSAGE"')
    assert parts and all("mime_multipart:mikey:cms" in row[0] for row in parts), parts
    assert not fields("frame.number", display='sip.Method == "MESSAGE" && _ws.malformed')
