"""The P-CSCF with e2ae against SIPp as the UE (Gm side) and as the core (registrar / S-CSCF /
far end), with an access gateway process registered over Iq.

Every process is real and talks over 127.0.0.1 with ephemeral ports. The scenarios in
tests/sipp/ check what each side must see: Security-Server in the 200 to REGISTER, Path at the
registrar; towards the core TCP/MSRP and TCP/BFCP on AGW ports with no fingerprint and no
a=3ge2ae; towards the UE TCP/TLS/MSRP and TCP/TLS/BFCP with the AGW's fingerprint and
a=3ge2ae:applied. After the calls the AGW must hold no termination.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.agw_helpers import identity
from tests.conftest import require_tool
from tests.sipp_harness import accessgw, agw, finish, free_port, iq_tls, pcscf, sipp

pytestmark = pytest.mark.peer


def _policy(tmp: Path, text: str) -> list[str]:
    path = tmp / "policy.toml"
    path.write_text("[e2ae]\n" + text)
    return ["--policy", str(path)]


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", ["orig", "term", "cancel", "busy"])
def test_call_through_pcscf(tmp_path: Path, case: str, transport: str) -> None:
    """REGISTER, then the call of ``case``; both SIPp sides must complete their scenario and
    the AGW must hold nothing afterwards (BYE, CANCEL and 486 release the terminations)."""
    core_port = free_port()
    extra = ["--next-hop-transport", "tcp"] if transport == "t1" else []
    with pcscf(tmp_path, core_port, *extra) as pc:
        with agw(tmp_path, pc.iq) as gw:
            core = sipp(tmp_path, f"core_{case}.xml", core_port, transport=transport)
            ue = sipp(tmp_path, f"ue_{case}.xml", free_port(), remote=pc.gm, transport=transport)
            ue_errors = finish(tmp_path, ue, pc)
            core_errors = finish(tmp_path, core, pc)
    assert ue_errors == "", ue_errors
    assert core_errors == "", core_errors
    assert gw.held == 0, gw.log.read_text()[-3000:]


@pytest.mark.parametrize("case", ["orig", "term", "busy"])
def test_call_with_the_real_accessgw(tmp_path: Path, case: str) -> None:
    """The same scenarios with the ``e2ae accessgw`` process on Iq over mutual TLS: every
    termination it reserved is released by the end of the call."""
    core_port = free_port()
    pc_iq, agw_iq = iq_tls(tmp_path)
    with (
        pcscf(tmp_path, core_port, *pc_iq) as pc,
        accessgw(tmp_path, pc.iq, pc, *agw_iq) as log,
    ):
        core = sipp(tmp_path, f"core_{case}.xml", core_port)
        ue = sipp(tmp_path, f"ue_{case}.xml", free_port(), remote=pc.gm)
        ue_errors = finish(tmp_path, ue, pc)
        core_errors = finish(tmp_path, core, pc)
        for _ in range(200):
            text = log.read_text(errors="replace")
            if text.count("] released ") == text.count("] reserved "):
                break
            time.sleep(0.05)
    assert ue_errors == "", ue_errors
    assert core_errors == "", core_errors
    text = log.read_text(errors="replace")
    reserved = text.count("] reserved ")
    assert reserved == 2 and text.count("] released ") == reserved, text


def test_agw_down_rejects_with_503(tmp_path: Path) -> None:
    """No AGW registered and on_agw_failure = reject: the e2ae INVITE gets 503 with a Warning
    naming the cause, and the core never sees it."""
    core_port = free_port()
    with pcscf(tmp_path, core_port, *_policy(tmp_path, 'on_agw_failure = "reject"\n')) as pc:
        core = sipp(tmp_path, "core_register.xml", core_port)
        ue = sipp(tmp_path, "ue_agw_down.xml", free_port(), remote=pc.gm)
        ue_errors = finish(tmp_path, ue, pc)
        core_errors = finish(tmp_path, core, pc)
    assert ue_errors == "", ue_errors
    assert core_errors == "", core_errors


def test_agw_down_bypass_forwards_untouched(tmp_path: Path) -> None:
    """No AGW registered and on_agw_failure = bypass: the call goes through without e2ae (the
    core gets the UE's TLS m-lines and fingerprint as they were)."""
    core_port = free_port()
    with pcscf(tmp_path, core_port, *_policy(tmp_path, 'on_agw_failure = "bypass"\n')) as pc:
        core = sipp(tmp_path, "core_bypass.xml", core_port)
        ue = sipp(tmp_path, "ue_bypass.xml", free_port(), remote=pc.gm)
        ue_errors = finish(tmp_path, ue, pc)
        core_errors = finish(tmp_path, core, pc)
    assert ue_errors == "", ue_errors
    assert core_errors == "", core_errors


class _Listener:
    """The core party's MSRP TCP listener: records what arrives on every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                self.received += data

    def close(self) -> None:
        self.sock.close()


def _answer_port(tmp: Path) -> int | None:
    """The AGW access port of the answer the SIPp UE received (from its message trace)."""
    for path in tmp.glob("ue_openssl_*_messages.log"):
        text = path.read_text(errors="replace")
        for chunk in text.split("SIP/2.0 200 OK")[1:]:
            if "a=3ge2ae:applied" in chunk:
                match = re.search(r"m=message (\d+) TCP/TLS/MSRP", chunk)
                if match:
                    return int(match.group(1))
    return None


def _s_client(port: int, ident: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    openssl = require_tool("openssl")
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-no_ign_eof"]
    args += ["-cert", f"{ident}.crt", "-key", f"{ident}.key"]
    return subprocess.run(args, input=data, capture_output=True, timeout=20, check=False)


def test_openssl_as_the_ue_after_a_sipp_call(tmp_path: Path) -> None:
    """After SIPp set up an originating call, openssl s_client with the UE's certificate
    connects to the AGW address from the answer and its bytes reach the core party's TCP
    listener; with another certificate it is refused and nothing reaches the core."""
    ue, ue_path = identity("ue", tmp_path)
    _, other_path = identity("other", tmp_path)
    listener = _Listener()
    core_port = free_port()
    try:
        with pcscf(tmp_path, core_port) as pc, agw(tmp_path, pc.iq) as gw:
            core = sipp(
                tmp_path, "core_openssl.xml", core_port, keys={"msrp_port": str(listener.port)}
            )
            uac = sipp(
                tmp_path,
                "ue_openssl.xml",
                free_port(),
                remote=pc.gm,
                keys={"ue_fp": ue.fingerprint("sha-256").value},
            )
            port = None
            for _ in range(200):
                port = _answer_port(tmp_path)
                if port is not None or uac.poll() is not None:
                    break
                time.sleep(0.05)
            assert port is not None, finish(tmp_path, uac, pc)
            refused = _s_client(port, other_path, b"from a stranger\n")
            for _ in range(200):  # the AGW's Notify reaches the P-CSCF, which logs it
                if "refused TLS attempt" in pc.log.read_text(errors="replace"):
                    break
                time.sleep(0.05)
            assert "fingerprint-mismatch" in pc.log.read_text(errors="replace"), refused
            assert not listener.received and listener.connections == 0
            good = _s_client(port, ue_path, b"MSRP a786hjs2 SEND\r\n")
            for _ in range(200):
                if listener.received:
                    break
                time.sleep(0.05)
            ue_errors = finish(tmp_path, uac, pc)
            core_errors = finish(tmp_path, core, pc)
        assert bytes(listener.received) == b"MSRP a786hjs2 SEND\r\n", (good, gw.log.read_text())
        assert ue_errors == "" and core_errors == "", ue_errors + core_errors
        assert gw.held == 0
    finally:
        listener.close()


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_message_through_pcscf(tmp_path: Path, transport: str) -> None:
    """REGISTER, then a MESSAGE (RFC 3428) with a multipart/mixed body (MIKEY and S/MIME parts,
    base64): the core side checks that every byte of the body arrived, in order, with no
    Record-Route, and answers 202, which the UE must get (and no 100 Trying before it)."""
    core_port = free_port()
    extra = ["--next-hop-transport", "tcp"] if transport == "t1" else []
    with pcscf(tmp_path, core_port, *extra) as pc:
        core = sipp(tmp_path, "core_message.xml", core_port, transport=transport)
        ue = sipp(tmp_path, "ue_message.xml", free_port(), remote=pc.gm, transport=transport)
        ue_errors = finish(tmp_path, ue, pc)
        core_errors = finish(tmp_path, core, pc)
        log = pc.log.read_text(errors="replace")
    assert ue_errors == "", ue_errors
    assert core_errors == "", core_errors
    assert re.search(
        r"MESSAGE \S+ \(orig\) from gm/\w+:127\.0\.0\.1:\d+ to core/\w+:\S+: 202", log
    ), log[-3000:]
