"""``e2ae mp example`` and ``e2ae mp decode``, run through their argument parser."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from mp import cli


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="e2ae")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_example_prints_the_exchange_with_the_key_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(["mp", "example"], capsys)
    assert code == 0
    assert "e2aepsk/key=<redacted>" in out
    assert cli.EXAMPLE_KEY.hex() not in out
    assert out.count("; MRFC -> MRFP") + out.count("; MRFP -> MRFC") == len(cli.examples())
    code, out, _ = _run(["mp", "example", "--show-keys"], capsys)
    assert cli.EXAMPLE_KEY.hex() in out


def test_decode_reads_an_example_and_redacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from iq import codec

    _, _, join = cli.examples()[2]
    path = tmp_path / "join.txt"
    path.write_bytes(codec.encode(join))
    code, out, _ = _run(["mp", "decode", str(path)], capsys)
    assert code == 0
    assert "JoinRequest(conference='sip:conf1@mrfc.example.net'" in out
    assert cli.EXAMPLE_KEY.hex() not in out


def test_decode_gives_the_error_code_of_a_bad_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("MEGACO/3 <mrfc>\nTransaction = 1 { Context = 7 { Modify = msrp/1 } }")
    code, _, err = _run(["mp", "decode", str(path)], capsys)
    assert code == 1
    assert "H.248 421" in err


def test_example_pcap_is_read_by_tshark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import require_tool

    require_tool("text2pcap")
    tshark = require_tool("tshark")
    pcap = tmp_path / "mp.pcapng"
    code, out, _ = _run(["mp", "example", "--pcap", str(pcap)], capsys)
    assert code == 0, out
    result = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields", "-e", "megaco.command"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Add" in result.stdout and "Notify" in result.stdout
