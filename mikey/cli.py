"""``e2ae mikey``: MIKEY and MIKEY-TICKET messages from the command line.

- ``e2ae mikey decode [FILE|-] [--hex|--base64|--raw] [--compact]``: decode one MIKEY message
  and print it as JSON (:mod:`mikey.jsonform`), or the MIKEY error number and the byte offset
  where the input is wrong. Without a form option the input is recognised: raw bytes (a MIKEY
  message starts with version byte 1), hex, base64, or an SDP ``a=key-mgmt:mikey <base64>``
  line (also inside a whole SDP body, if it has exactly one such line).
- ``e2ae mikey encode [FILE|-] [--hex|--base64|--raw]``: read that JSON and print the message,
  base64 (as ``a=key-mgmt:mikey`` carries it) unless asked otherwise.

Exit codes: 0 done, 1 the input is not a MIKEY message (or not its JSON form), 2 usage (a bad
option, a file that cannot be read). Docs: docs/mikey.md.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import string
import sys
from pathlib import Path
from typing import Any

from mikey.constants import ErrorNo

#: ``a=key-mgmt:mikey <data>`` (RFC 4567), the ``a=`` optional, anywhere in the input.
KEY_MGMT = re.compile(rb"^[ \t]*(?:a=)?key-mgmt:[ \t]*(\S+)[ \t]*(\S*)[ \t]*\r?$", re.MULTILINE)
_TEXT = set(string.printable.encode())
_HEX_DIGITS = set(string.hexdigits.encode())
_INLINE_WIDTH = 88


class InputError(Exception):
    """Input that is not in the form asked for (or in none of the forms recognised)."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("mikey", help="MIKEY / MIKEY-TICKET messages: decode, encode")
    sub = parser.add_subparsers(dest="mikey_command", required=True, metavar="MIKEY_COMMAND")
    decode = sub.add_parser("decode", help="decode a MIKEY message and print it as JSON")
    decode.add_argument("file", nargs="?", default="-", help="file to read (default stdin)")
    _form_options(decode, "input is", default=None)
    decode.add_argument("--compact", action="store_true", help="print the JSON on one line")
    decode.set_defaults(func=_decode)
    encode = sub.add_parser("encode", help="encode the JSON form of a MIKEY message")
    encode.add_argument("file", nargs="?", default="-", help="file to read (default stdin)")
    _form_options(encode, "print", default="base64")
    encode.set_defaults(func=_encode)


def _form_options(parser: argparse.ArgumentParser, verb: str, default: str | None) -> None:
    group = parser.add_mutually_exclusive_group()
    for form, what in (("hex", "hex"), ("base64", "base64"), ("raw", "raw bytes")):
        group.add_argument(
            f"--{form}", dest="form", action="store_const", const=form, help=f"{verb} {what}"
        )
    parser.set_defaults(form=default)


def _read(name: str, command: str) -> bytes | None:
    try:
        return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as e:
        sys.stderr.write(f"e2ae mikey {command}: cannot read {name}: {e.strerror or e}\n")
        return None


def message_bytes(data: bytes, form: str | None) -> bytes:
    """The MIKEY message in ``data``, given as ``form`` (hex, base64, raw) or recognised."""
    if form == "raw":
        return data
    if form == "hex":
        return _from_hex(data)
    if form == "base64":
        return _from_base64(data)
    if not data.strip():
        raise InputError("empty input")
    if not set(data) <= _TEXT:
        return data
    lines = KEY_MGMT.findall(data)
    if lines:
        mikey = [value for protocol, value in lines if protocol.lower() == b"mikey"]
        if not mikey:
            raise InputError("the key-mgmt line is not for mikey")
        if len(mikey) > 1:
            raise InputError(f"{len(mikey)} a=key-mgmt:mikey lines; give one")
        if not mikey[0]:
            raise InputError("the a=key-mgmt:mikey line has no data")
        return _from_base64(mikey[0])
    if set(b"".join(data.split())) <= _HEX_DIGITS:
        return _from_hex(data)
    return _from_base64(data)


def _from_hex(data: bytes) -> bytes:
    try:
        return bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InputError("input is not hex") from None


def _from_base64(data: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("input is not base64 (nor hex, nor a raw MIKEY message)") from None


def format_json(value: Any, indent: int = 0) -> str:
    """JSON with two-space indentation, an object or list on one line when it holds no object
    or list and fits."""
    flat = json.dumps(value)
    nested = isinstance(value, dict | list) and any(
        isinstance(v, dict | list) for v in (value.values() if isinstance(value, dict) else value)
    )
    if not isinstance(value, dict | list) or (not nested and indent + len(flat) <= _INLINE_WIDTH):
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, list):
        items = [pad + format_json(v, indent + 2) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    members = [f"{pad}{json.dumps(k)}: {format_json(v, indent + 2)}" for k, v in value.items()]
    return "{\n" + ",\n".join(members) + "\n" + " " * indent + "}"


def _decode(args: argparse.Namespace) -> int:
    from mikey import decode
    from mikey.errors import MikeyError
    from mikey.jsonform import to_json

    data = _read(args.file, "decode")
    if data is None:
        return 2
    try:
        message = decode(message_bytes(data, args.form))
    except InputError as e:
        sys.stderr.write(f"e2ae mikey decode: {e}\n")
        return 1
    except MikeyError as e:
        where = f", offset {e.offset}" if e.offset >= 0 else ""
        sys.stderr.write(
            f"e2ae mikey decode: {e.reason} (MIKEY error {e.code} {_name(e.code)}{where})\n"
        )
        return 1
    form = to_json(message)
    text = json.dumps(form, separators=(",", ":")) if args.compact else format_json(form)
    sys.stdout.write(text + "\n")
    return 0


def _encode(args: argparse.Namespace) -> int:
    from mikey import encode
    from mikey.jsonform import JsonFormError, from_json

    data = _read(args.file, "encode")
    if data is None:
        return 2
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        sys.stderr.write("e2ae mikey encode: input is not UTF-8 text\n")
        return 1
    except json.JSONDecodeError as e:
        sys.stderr.write(
            f"e2ae mikey encode: not JSON: {e.msg} (line {e.lineno}, column {e.colno})\n"
        )
        return 1
    if not isinstance(document, dict):
        sys.stderr.write("e2ae mikey encode: the JSON is not an object\n")
        return 1
    try:
        wire = encode(from_json(document))
    except JsonFormError as e:
        code = f" (MIKEY error {e.code} {_name(e.code)})" if e.code is not None else ""
        sys.stderr.write(f"e2ae mikey encode: {e}{code}\n")
        return 1
    if args.form == "raw":
        sys.stdout.buffer.write(wire)
    elif args.form == "hex":
        sys.stdout.write(wire.hex() + "\n")
    else:
        sys.stdout.write(base64.b64encode(wire).decode() + "\n")
    return 0


def _name(code: int) -> str:
    try:
        return ErrorNo(code).name
    except ValueError:
        return "unregistered"
