"""A packet capture of loopback traffic with ``dumpcap``, for ``e2ae demo --pcap FILE``.

The capture starts before the first packet of the demo (it waits until dumpcap has written the
file header) and stops, flushed, after the last one. With the NSS key log the demo writes
beside it, Wireshark or tshark decrypt the TLS of the access legs and of Iq: :func:`tshark_command`
gives the command line, with the *Decode As* options for the Iq port (MEGACO) and the MSRP and
BFCP ports.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

#: The capture filter: the demo runs on 127.0.0.1 only.
BPF = "ip host 127.0.0.1 and (tcp or udp)"


class CaptureError(Exception):
    """dumpcap is missing, or cannot capture on the loopback interface."""


def find_dumpcap() -> str:
    for candidate in (shutil.which("dumpcap"), "/usr/bin/dumpcap", "/usr/sbin/dumpcap"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise CaptureError(
        "dumpcap not found: install it (Debian: apt-get install wireshark-common) to use --pcap"
    )


def keylog_for(pcap: Path) -> Path:
    """The default key log beside a capture: ``FILE`` with the suffix ``.keys``."""
    return pcap.with_suffix(".keys")


def tshark_command(
    pcap: Path,
    keylog: Path,
    *,
    iq_port: int | None,
    msrp_ports: Iterable[int] = (),
    bfcp_ports: Iterable[int] = (),
) -> str:
    """The tshark command that reads the capture with its key log and decode-as options.

    ``msrp_ports`` and ``bfcp_ports`` are the plain-TCP (core leg) ports. Inside TLS (the
    access legs, Iq) tshark 4.0 has no MSRP, BFCP or MEGACO decode-as: the decrypted bytes are
    shown as text (``data.text``; in Wireshark, Follow TLS Stream). The base64 parts of a
    protected SIP MESSAGE are decoded first, so that the MIKEY and CMS dissectors read the
    bytes, not their base64 text (docs/messaging.md)."""
    args = ["tshark", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}"]
    args += ["-o", "data.show_as_text:TRUE", "-o", "mime_multipart.remove_base64_encoding:TRUE"]
    if iq_port is not None:
        args += ["-d", f"tcp.port=={iq_port},tls"]
    for port in sorted(set(msrp_ports)):
        args += ["-d", f"tcp.port=={port},msrp"]
    for port in sorted(set(bfcp_ports)):
        args += ["-d", f"tcp.port=={port},bfcp"]
    return shlex.join(args)


@attrs.define
class Capture:
    """``dumpcap -i lo`` writing ``path`` until :meth:`stop`."""

    path: Path
    interface: str = "lo"
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start dumpcap and wait until it captures; :class:`CaptureError` if it cannot."""
        dumpcap = find_dumpcap()
        self.path.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [dumpcap, "-q", "-i", self.interface, "-f", BPF, "-P", "-w", str(self.path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() if self.process.stderr else b"").decode()
                hint = ""
                if "permission" in err.lower():
                    hint = (
                        " (run as root, or give dumpcap the capture capabilities: "
                        "setcap cap_net_raw,cap_net_admin+eip dumpcap)"
                    )
                raise CaptureError(
                    f"dumpcap cannot capture on {self.interface}: {err.strip()}{hint}"
                )
            if self.path.exists() and self.path.stat().st_size >= 24:  # the pcap file header
                time.sleep(0.2)
                return
            time.sleep(0.05)
        self.stop()
        raise CaptureError(f"dumpcap did not start capturing on {self.interface} in {timeout}s")

    def stop(self, linger: float = 0.3) -> None:
        """Let the last packets arrive, then stop dumpcap (it flushes the file on SIGINT)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            time.sleep(linger)
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
