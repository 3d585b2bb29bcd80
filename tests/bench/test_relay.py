"""The relay benchmark runs (tiny sizes) and prints its table; it asserts no figure."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, require_tool


@pytest.mark.slow
def test_relay_bench_quick_mode_runs() -> None:
    require_tool("stunnel4")
    require_tool("haproxy")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "relay.py"),
            "--quick",
            "--size",
            str(4 << 20),
            "--handshakes",
            "8",
            "--idle",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.strip().startswith("agw"))
    assert header.split() == ["agw", "stunnel", "haproxy"]
    for metric in ("MB/s", "CPU s/GiB", "handshakes/s", "RSS KiB/session"):
        row = next(line for line in lines if line.startswith(metric))
        assert len(row[20:].split()) == 3
    assert "ratios agw / haproxy:" in result.stdout


def _positive(text: str) -> float:
    value = float(text)
    assert value > 0, text
    return value


@pytest.mark.slow
def test_relay_bench_prints_psk_rows_and_ratios_after_the_table() -> None:
    require_tool("stunnel4")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "relay.py"),
            "--quick",
            "--relays",
            "agw,stunnel",
            "--size",
            str(1 << 20),
            "--handshakes",
            "4",
            "--idle",
            "4",
            "--psk-handshakes",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The relay table comes first, as it always did; the TLS-PSK rows after it.
    table_end = next(i for i, line in enumerate(lines) if line.startswith("RSS KiB/session"))
    start = next(i for i, line in enumerate(lines) if line.startswith("TLS-PSK against"))
    assert start > table_end
    assert "20 full handshakes per row" in lines[start]
    assert lines[start + 1].split() == [
        "handshakes/s",
        "server",
        "CPU",
        "ms/handshake",
        "client",
        "CPU",
        "ms/handshake",
        "negotiated",
    ]
    rows = {line.split()[0]: line for line in lines[start + 2 :] if not line.startswith(" ")}
    expected = {
        "psk-tls12": "TLSv1.2 PSK-AES128-GCM-SHA256",
        "cert-tls12": "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256",
        "cert-tls13": "TLSv1.3",
    }
    no_stunnel_psk = "stunnel4 has no PSK support here" in result.stdout
    if not no_stunnel_psk:
        expected["stunnel-psk-tls12"] = "TLSv1.2 PSK-AES128-GCM-SHA256"
        expected["stunnel-cert-tls12"] = "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256"
    for name, negotiated in expected.items():
        fields = rows[name][20:].split(maxsplit=3)
        for value in fields[:3]:
            _positive(value)
        assert fields[3].startswith(negotiated), rows[name]
    pairs = [("psk-tls12", "cert-tls12"), ("psk-tls12", "cert-tls13")]
    if not no_stunnel_psk:
        pairs.append(("stunnel-psk-tls12", "stunnel-cert-tls12"))
    for psk, cert in pairs:
        at = lines.index(f"ratios {psk} / {cert}:")
        ratios = {line[2:27].strip(): line[27:] for line in lines[at + 1 : at + 4]}
        assert set(ratios) == {
            "handshakes/s",
            "server CPU ms/handshake",
            "client CPU ms/handshake",
        }
        for value in ratios.values():
            _positive(value)
