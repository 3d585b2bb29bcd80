"""``e2ae mikey decode`` and ``e2ae mikey encode`` as real processes: every input form, the
round trip back to the same bytes, and one-line errors with their exit codes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mikey import encode, samples
from mikey.cli import InputError, format_json, message_bytes
from mikey.jsonform import to_json
from tests.conftest import REPO, run_e2ae

WIRE = encode(samples.request_resp())
B64 = base64.b64encode(WIRE)
FORM = to_json(samples.request_resp())


def _decoded(args: list[str], data: bytes | None = None) -> object:
    result = run_e2ae(["mikey", "decode", *args], input=data)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    return json.loads(result.stdout)


def test_decode_recognises_every_input_form(tmp_path: Path) -> None:
    sdp = b"v=0\r\ns=-\r\nt=0 0\r\na=key-mgmt:mikey " + B64 + b"\r\nm=message 9 TCP/MSRP *\r\n"
    raw = tmp_path / "message.mikey"
    raw.write_bytes(WIRE)
    inputs = [
        ([], B64 + b"\n"),
        ([], WIRE.hex().encode()),
        ([], WIRE.hex().upper().encode() + b"\n"),
        ([], b"a=key-mgmt:mikey " + B64 + b"\n"),
        ([], sdp),
        ([str(raw)], None),
        (["--raw", str(raw)], None),
        (["--hex", "-"], WIRE.hex().encode()),
        (["--base64"], B64[:40] + b"\n" + B64[40:]),
    ]
    for args, data in inputs:
        assert _decoded(args, data) == FORM, args


def test_decode_prints_readable_json() -> None:
    result = run_e2ae(["mikey", "decode"], input=B64)
    text = result.stdout.decode()
    assert '"data_type": "REQUEST_RESP"' in text
    assert '"payload": "KEMAC"' in text
    assert '"data_text": "https://kms.ims.example.net"' in text
    assert text.count("\n") > 20
    compact = run_e2ae(["mikey", "decode", "--compact"], input=B64)
    assert compact.stdout.count(b"\n") == 1
    assert json.loads(compact.stdout) == FORM


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_format_json_is_the_same_json(name: str) -> None:
    form = to_json(samples.ALL[name]())
    text = format_json(form)
    assert json.loads(text) == form
    assert all(len(line) <= 100 or '": "' in line for line in text.splitlines())


def test_encode_gives_back_the_same_bytes(tmp_path: Path) -> None:
    for name, build in samples.ALL.items():
        wire = encode(build())
        decoded = run_e2ae(["mikey", "decode", "--raw"], input=wire)
        assert decoded.returncode == 0, (name, decoded.stderr)
        doc = tmp_path / f"{name}.json"
        doc.write_bytes(decoded.stdout)
        again = run_e2ae(["mikey", "encode", str(doc)])
        assert again.returncode == 0, (name, again.stderr)
        assert again.stdout == base64.b64encode(wire) + b"\n", name
    as_hex = run_e2ae(["mikey", "encode", "--hex", "-"], input=json.dumps(FORM).encode())
    assert as_hex.stdout == WIRE.hex().encode() + b"\n"
    as_raw = run_e2ae(["mikey", "encode", "--raw"], input=json.dumps(FORM).encode())
    assert as_raw.stdout == WIRE
    as_b64 = run_e2ae(["mikey", "encode", "--base64"], input=json.dumps(FORM).encode())
    assert as_b64.stdout == B64 + b"\n"


def _fails(args: list[str], data: bytes | None, code: int) -> str:
    result = run_e2ae(["mikey", *args], input=data)
    assert result.returncode == code, (args, result.stdout, result.stderr)
    assert result.stdout == b""
    assert b"Traceback" not in result.stderr
    return result.stderr.decode()


def test_decode_errors_say_the_mikey_error_and_offset() -> None:
    short = _fails(["decode", "--raw"], WIRE[:6], 1)
    assert short == (
        "e2ae mikey decode: CSB ID: needs 4 bytes, 2 left (MIKEY error 12 UNSPECIFIED, offset 4)\n"
    )
    bad_type = WIRE[:1] + b"\x63" + WIRE[2:]
    assert _fails(["decode"], bad_type.hex().encode(), 1) == (
        "e2ae mikey decode: unknown data type 99 (MIKEY error 11 INVALID_DT, offset 1)\n"
    )
    trailing = _fails(["decode"], base64.b64encode(WIRE + b"\0"), 1)
    assert trailing.startswith("e2ae mikey decode: 1 bytes after the last payload (MIKEY error 12")
    assert trailing.count("\n") == 1


def test_decode_input_errors() -> None:
    assert "not base64" in _fails(["decode"], b"not a message\n", 1)
    assert "not base64" in _fails(["decode", "--base64"], WIRE.hex().encode() + b"!", 1)
    assert "not hex" in _fails(["decode", "--hex"], B64, 1)
    assert "empty input" in _fails(["decode"], b"\n", 1)
    two = b"a=key-mgmt:mikey " + B64 + b"\na=key-mgmt:mikey " + B64 + b"\n"
    assert "2 a=key-mgmt:mikey lines" in _fails(["decode"], two, 1)
    assert "not for mikey" in _fails(["decode"], b"a=key-mgmt:other AAAA\n", 1)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mikey"
    assert _fails(["decode", str(missing)], None, 2).startswith(
        f"e2ae mikey decode: cannot read {missing}: "
    )
    assert f"cannot read {missing}" in _fails(["encode", str(missing)], None, 2)
    assert "not allowed with" in _fails(["decode", "--hex", "--raw"], B64, 2)
    assert "not allowed with" in _fails(["encode", "--hex", "--base64"], b"{}", 2)
    assert "invalid choice" in _fails(["frobnicate"], None, 2)


def test_encode_errors_name_the_json_path() -> None:
    doc = json.loads(json.dumps(FORM))
    doc["payloads"][3]["key_data"][0]["kv"] = {"type": "KvSpi", "spi": "0x01"}
    assert _fails(["encode"], json.dumps(doc).encode(), 1) == (
        "e2ae mikey encode: payloads[3].key_data[0].kv.spi: expected hex bytes,"
        " got the string '0x01'\n"
    )
    doc = json.loads(json.dumps(FORM))
    doc["payloads"][4]["ver_data"] = "00"
    assert _fails(["encode"], json.dumps(doc).encode(), 1) == (
        "e2ae mikey encode: payloads[4]: V ver data is 1 bytes; HMAC_SHA_256_256 needs 32"
        " (MIKEY error 3 INVALID_MAC)\n"
    )
    assert "not JSON: " in _fails(["encode"], b'{"header": ', 1)
    assert "not an object" in _fails(["encode"], b"[]", 1)
    assert "not UTF-8" in _fails(["encode"], b"\xff\xfe", 1)


def test_message_bytes_recognition() -> None:
    assert message_bytes(WIRE, None) == WIRE
    assert message_bytes(b"  " + WIRE.hex().encode() + b"  ", None) == WIRE
    assert message_bytes(B64, None) == WIRE
    assert message_bytes(b"key-mgmt: mikey " + B64, None) == WIRE
    assert message_bytes(b"0102", "raw") == b"0102"
    with pytest.raises(InputError):
        message_bytes(b"a=key-mgmt:mikey\n", None)


def test_the_module_imports_no_twisted() -> None:
    probe = "import sys, mikey.cli, mikey.jsonform; print('twisted' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_example_of_the_docs_is_what_the_command_prints() -> None:
    page = (REPO / "docs" / "mikey.md").read_text()
    example = page.split("given as base64,", 1)[1]
    b64 = example.split("```text\n", 1)[1].split("\n```", 1)[0]
    shown = example.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert base64.b64decode(b64) == WIRE
    decoded = run_e2ae(["mikey", "decode"], input=b64.encode())
    assert decoded.stdout.decode() == shown + "\n"
    again = run_e2ae(["mikey", "encode"], input=decoded.stdout)
    assert again.stdout.decode() == b64 + "\n"
