"""A strict subset of MIME (RFC 2045, RFC 2046) for the body of a KMS-protected SIP MESSAGE.

The MESSAGE body is a ``multipart/mixed`` of an ``application/mikey`` part (the TRANSFER_INIT,
base64), an ``application/pkcs7-mime; smime-type=authEnveloped-data`` part (the CMS body of
:mod:`immsg.cms`, base64, RFC 8551 §3.2.2) and, towards a list server, an
``application/resource-lists+xml`` part with ``Content-Disposition: recipient-list``
(RFC 5365, RFC 4826). What the CMS body encrypts is itself a MIME entity (:func:`entity`).

Bytes in, bytes out, CRLF line ends. What is taken, and nothing more:

- header lines ``Name: value`` in US-ASCII, at most 998 octets each, folded lines unfolded, the
  whole block at most :data:`MAX_HEADER_BYTES`; no comments in structured values;
- ``Content-Type`` exactly once in every part, ``type/subtype *(; name=value)`` with RFC 2045
  tokens or quoted strings, no parameter twice;
- ``Content-Transfer-Encoding`` ``7bit`` (the default), ``8bit``, ``binary`` or ``base64``
  (lines of at most 76 characters, canonical, decoded with ``strict_mode``);
- multipart bodies with a ``boundary`` parameter (RFC 2046 characters, 1 to 70), preamble and
  epilogue allowed, the close delimiter required, 1 to :data:`MAX_PARTS` parts, no boundary
  inside a part, the preamble or the epilogue.

Every failure is a :class:`MimeError` with a ``reason``.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape

import attrs

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_MIME_BYTES",
    "MAX_PARTS",
    "MAX_RECIPIENTS",
    "MimeError",
    "Part",
    "encode_part",
    "entity",
    "mikey_part",
    "multipart",
    "parse_entity",
    "parse_multipart",
    "recipient_list",
    "recipient_list_part",
    "smime_part",
]

MAX_PARTS = 8
MAX_HEADER_BYTES = 4096
#: The largest entity or multipart body parsed.
MAX_MIME_BYTES = 128 * 1024
#: The most entries a recipient list may have, and its largest body.
MAX_RECIPIENTS = 100
MAX_RECIPIENT_LIST_BYTES = 16 * 1024

_MAX_LINE = 998
_BASE64_LINE = 76
_ENCODINGS = ("7bit", "8bit", "binary", "base64")
_CRLF = b"\r\n"

CONTENT_TYPE_MIKEY = "application/mikey"
CONTENT_TYPE_SMIME = "application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m"
CONTENT_TYPE_RESOURCE_LISTS = "application/resource-lists+xml"
RESOURCE_LISTS_NS = "urn:ietf:params:xml:ns:resource-lists"


class MimeError(Exception):
    """A MIME entity or multipart body this profile does not take (or cannot build)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"MIME: {reason}")


# --- header values -------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_QUOTED = re.compile(r'"((?:[^"\\\r\n]|\\[\x00-\x7f])*)"')
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_HEADER_VALUE = re.compile(r"[\t -~]*")
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_URI = re.compile(r"[!-~]{1,1024}")


def _skip_ows(value: str, pos: int) -> int:
    while pos < len(value) and value[pos] in " \t":
        pos += 1
    return pos


def _parse_params(value: str, pos: int, what: str) -> dict[str, str]:
    """``*(OWS ";" OWS attribute "=" value) OWS`` from ``pos`` to the end."""
    params: dict[str, str] = {}
    while True:
        pos = _skip_ows(value, pos)
        if pos == len(value):
            return params
        if value[pos] != ";":
            raise MimeError(f"{what}: expected ';' at character {pos} of {value!r}")
        pos = _skip_ows(value, pos + 1)
        name = _TOKEN.match(value, pos)
        if name is None:
            raise MimeError(f"{what}: a parameter without a name in {value!r}")
        pos = _skip_ows(value, name.end())
        if value[pos : pos + 1] != "=":
            raise MimeError(f"{what}: parameter {name.group()!r} without '=' in {value!r}")
        pos = _skip_ows(value, pos + 1)
        token = _TOKEN.match(value, pos)
        if token is not None:
            text, pos = token.group(), token.end()
        else:
            quoted = _QUOTED.match(value, pos)
            if quoted is None:
                raise MimeError(f"{what}: parameter {name.group()!r} has no valid value")
            text, pos = re.sub(r"\\(.)", r"\1", quoted.group(1), flags=re.DOTALL), quoted.end()
        key = name.group().lower()
        if key in params:
            raise MimeError(f"{what}: parameter {key!r} twice")
        params[key] = text


def _parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """(lower-cased ``type/subtype``, parameters) of a Content-Type value."""
    kind = _TOKEN.match(value)
    if kind is None or value[kind.end() : kind.end() + 1] != "/":
        raise MimeError(f"Content-Type {value!r} is not type/subtype")
    sub = _TOKEN.match(value, kind.end() + 1)
    if sub is None:
        raise MimeError(f"Content-Type {value!r} has no subtype")
    params = _parse_params(value, sub.end(), "Content-Type")
    return f"{kind.group()}/{sub.group()}".lower(), params


def _parse_disposition(value: str) -> tuple[str, dict[str, str]]:
    kind = _TOKEN.match(value)
    if kind is None:
        raise MimeError(f"Content-Disposition {value!r} has no disposition type")
    return kind.group().lower(), _parse_params(value, kind.end(), "Content-Disposition")


def _param_value(text: str) -> str:
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _headers_tuple(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(name), str(value)) for name, value in headers)


@attrs.frozen
class Part:
    """One MIME entity: its header fields in order and its body, decoded from its
    Content-Transfer-Encoding."""

    headers: tuple[tuple[str, str], ...] = attrs.field(converter=_headers_tuple)
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of the first header field ``name`` (any case), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def content_type(self) -> str:
        """The lower-cased ``type/subtype``."""
        return _parse_content_type(self._content_type_value())[0]

    @property
    def params(self) -> dict[str, str]:
        """The Content-Type parameters, names lower-cased."""
        return _parse_content_type(self._content_type_value())[1]

    @property
    def transfer_encoding(self) -> str:
        value = self.header("Content-Transfer-Encoding")
        return "7bit" if value is None else value.lower()

    def _content_type_value(self) -> str:
        value = self.header("Content-Type")
        if value is None:
            raise MimeError("a part without Content-Type")
        return value


# --- bodies --------------------------------------------------------------------------------


def _check_lines(body: bytes, encoding: str) -> None:
    """RFC 2045 §2.7/§2.8: 7bit and 8bit data are CRLF lines of at most 998 octets, no NUL."""
    if encoding == "7bit" and any(b >= 0x80 for b in body):
        raise MimeError("a 7bit body with 8-bit bytes")
    if b"\x00" in body:
        raise MimeError(f"a {encoding} body with a NUL byte")
    for line in body.split(_CRLF):
        if b"\r" in line or b"\n" in line:
            raise MimeError(f"a {encoding} body with a CR or LF that is not CRLF")
        if len(line) > _MAX_LINE:
            raise MimeError(f"a {encoding} body with a line longer than {_MAX_LINE} octets")


def _is_7bit(body: bytes) -> bool:
    try:
        _check_lines(body, "7bit")
    except MimeError:
        return False
    return True


def _encode_body(body: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        text = base64.b64encode(body)
        return _CRLF.join(text[i : i + _BASE64_LINE] for i in range(0, len(text), _BASE64_LINE))
    if encoding in ("7bit", "8bit"):
        _check_lines(body, encoding)
    return body


def _decode_body(data: bytes, encoding: str) -> bytes:
    if encoding != "base64":
        if encoding in ("7bit", "8bit"):
            _check_lines(data, encoding)
        return data
    lines = data.split(_CRLF)
    while lines and not lines[-1]:
        lines.pop()
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise MimeError("base64 data with a CR or LF that is not CRLF")
        if len(line) > _BASE64_LINE:
            raise MimeError(f"a base64 line longer than {_BASE64_LINE} characters")
        if not line:
            raise MimeError("an empty line inside base64 data")
    joined = b"".join(lines)
    try:
        decoded = binascii.a2b_base64(joined, strict_mode=True)
    except binascii.Error as exc:
        raise MimeError(f"bad base64: {exc}") from None
    if base64.b64encode(decoded) != joined:
        raise MimeError("bad base64: not in canonical form")
    return decoded


# --- entities ------------------------------------------------------------------------------


def _check_headers(headers: Sequence[tuple[str, str]]) -> str:
    """The transfer encoding of a valid header list (raises MimeError if not valid)."""
    seen: dict[str, int] = {}
    for name, value in headers:
        if not _HEADER_NAME.fullmatch(name):
            raise MimeError(f"header name {name!r} is not RFC 5322 field-name characters")
        if not _HEADER_VALUE.fullmatch(value):
            raise MimeError(f"header {name}: a value with a control or non-ASCII character")
        seen[name.lower()] = seen.get(name.lower(), 0) + 1
    for unique in ("content-type", "content-transfer-encoding", "content-disposition"):
        if seen.get(unique, 0) > 1:
            raise MimeError(f"{unique} twice in one part")
    part = Part(tuple(headers), b"")
    part.content_type  # noqa: B018 - the check that Content-Type is there and valid
    disposition = part.header("Content-Disposition")
    if disposition is not None:
        _parse_disposition(disposition)
    encoding = part.transfer_encoding
    if encoding not in _ENCODINGS:
        raise MimeError(f"Content-Transfer-Encoding {encoding!r} (7bit, 8bit, binary, base64)")
    return encoding


def encode_part(part: Part) -> bytes:
    """The bytes of ``part``: its header lines, a blank line, its body encoded as its
    Content-Transfer-Encoding says."""
    encoding = _check_headers(part.headers)
    lines = []
    for name, value in part.headers:
        if value != value.strip(" \t"):
            raise MimeError(f"header {name}: leading or trailing white space in the value")
        line = f"{name}: {value}".encode("ascii")
        if len(line) > _MAX_LINE:
            raise MimeError(f"header {name}: a line longer than {_MAX_LINE} octets")
        lines.append(line + _CRLF)
    block = b"".join(lines)
    if len(block) > MAX_HEADER_BYTES:
        raise MimeError(f"a header block of {len(block)} bytes (at most {MAX_HEADER_BYTES})")
    return block + _CRLF + _encode_body(part.body, encoding)


def _parse_header_block(block: bytes) -> tuple[tuple[str, str], ...]:
    """Header fields from ``block`` (every line ending in CRLF, no blank line)."""
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise MimeError("a non-ASCII byte in the header block") from None
    fields: list[list[str]] = []
    for line in text.split("\r\n")[:-1]:
        if "\r" in line or "\n" in line:
            raise MimeError("a header line that does not end in CRLF")
        if len(line) > _MAX_LINE:
            raise MimeError(f"a header line longer than {_MAX_LINE} octets")
        if line[:1] in (" ", "\t"):
            if not fields:
                raise MimeError("the header block starts with a continuation line")
            fields[-1][1] += line
            continue
        name, colon, value = line.partition(":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise MimeError(f"not a header field: {line[:40]!r}")
        fields.append([name, value])
    headers = tuple((name, value.strip(" \t")) for name, value in fields)
    _check_headers(headers)
    return headers


def _parse_part(data: bytes) -> Part:
    if data.startswith(_CRLF):
        raise MimeError("a part without Content-Type (no header fields)")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEADER_BYTES:
            raise MimeError(f"a header block larger than {MAX_HEADER_BYTES} bytes")
        raise MimeError("no blank line after the header fields")
    if end + 2 > MAX_HEADER_BYTES:
        raise MimeError(f"a header block of {end + 2} bytes (at most {MAX_HEADER_BYTES})")
    headers = _parse_header_block(data[: end + 2])
    part = Part(headers, b"")
    return Part(headers, _decode_body(data[end + 4 :], part.transfer_encoding))


def entity(content_type: str, body: bytes, *, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """A MIME entity (what the CMS body encrypts): ``Content-Type``, the ``extra`` header
    fields, a blank line and ``body``. Without a Content-Transfer-Encoding in ``extra``, a body
    that is not 7bit text gets ``Content-Transfer-Encoding: binary``."""
    headers = [("Content-Type", content_type), *extra]
    if not any(name.lower() == "content-transfer-encoding" for name, _ in extra):
        if not _is_7bit(body):
            headers.append(("Content-Transfer-Encoding", "binary"))
    return encode_part(Part(tuple(headers), body))


def parse_entity(data: bytes) -> Part:
    """The one MIME entity ``data`` is (the reverse of :func:`entity`)."""
    if len(data) > MAX_MIME_BYTES:
        raise MimeError(f"an entity of {len(data)} bytes (at most {MAX_MIME_BYTES})")
    return _parse_part(bytes(data))


# --- multipart -----------------------------------------------------------------------------


def _check_boundary(boundary: str) -> bytes:
    if not _BOUNDARY.fullmatch(boundary):
        raise MimeError(
            f"boundary {boundary[:80]!r}: 1 to 70 RFC 2046 characters, not ending in a space"
        )
    return boundary.encode("ascii")


def multipart(
    parts: Sequence[Part], *, boundary: str | None = None, subtype: str = "mixed"
) -> tuple[str, bytes]:
    """(Content-Type value with its boundary, body) of a multipart of ``parts``. The boundary
    (24 random hex digits unless given) occurs in none of the parts."""
    if not _TOKEN.fullmatch(subtype):
        raise MimeError(f"multipart subtype {subtype!r} is not a token")
    if not 1 <= len(parts) <= MAX_PARTS:
        raise MimeError(f"a multipart has 1 to {MAX_PARTS} parts, not {len(parts)}")
    encoded = [encode_part(part) for part in parts]
    if boundary is None:
        while True:
            boundary = secrets.token_hex(12)
            if not any(boundary.encode() in item for item in encoded):
                break
    mark = _check_boundary(boundary)
    for index, item in enumerate(encoded):
        if mark in item:
            raise MimeError(f"the boundary occurs in part {index + 1}")
    dash = b"--" + mark
    body = b"".join(dash + _CRLF + item + _CRLF for item in encoded) + dash + b"--" + _CRLF
    return f"multipart/{subtype}; boundary={_param_value(boundary)}", body


def _skip_padding(body: bytes, pos: int) -> int:
    while pos < len(body) and body[pos] in b" \t":
        pos += 1
    return pos


def parse_multipart(content_type: str, body: bytes) -> tuple[Part, ...]:
    """The parts of a multipart ``body`` whose Content-Type value is ``content_type``."""
    if len(body) > MAX_MIME_BYTES:
        raise MimeError(f"a multipart body of {len(body)} bytes (at most {MAX_MIME_BYTES})")
    body = bytes(body)
    kind, params = _parse_content_type(content_type)
    if not kind.startswith("multipart/"):
        raise MimeError(f"Content-Type {kind} is not multipart")
    if "boundary" not in params:
        raise MimeError("a multipart Content-Type without a boundary parameter")
    dash = b"--" + _check_boundary(params["boundary"])
    delimiter = _CRLF + dash
    if body.startswith(dash):
        pos = 0
    else:
        found = body.find(delimiter)
        if found < 0:
            raise MimeError("no boundary delimiter line")
        if dash in body[:found]:
            raise MimeError("the boundary occurs in the preamble")
        pos = found + 2
    parts: list[Part] = []
    while True:
        after = pos + len(dash)
        if body[after : after + 2] == b"--":
            if not parts:
                raise MimeError("a multipart without a body part")
            rest = _skip_padding(body, after + 2)
            if rest != len(body) and body[rest : rest + 2] != _CRLF:
                raise MimeError("the close delimiter line does not end in CRLF")
            if dash in body[rest:]:
                raise MimeError("the boundary occurs in the epilogue")
            return tuple(parts)
        start = _skip_padding(body, after)
        if body[start : start + 2] != _CRLF:
            raise MimeError("a boundary delimiter line does not end in CRLF")
        start += 2
        if len(parts) == MAX_PARTS:
            raise MimeError(f"more than {MAX_PARTS} parts")
        end = body.find(delimiter, start)
        if end < 0:
            raise MimeError("no close delimiter (the multipart is cut short)")
        tail = end + len(delimiter)
        if body[tail : tail + 2] != b"--" and body[_skip_padding(body, tail) :][:2] != _CRLF:
            raise MimeError(f"the boundary occurs inside part {len(parts) + 1}")
        parts.append(_parse_part(body[start:end]))
        pos = end + 2


# --- the parts of a protected MESSAGE -------------------------------------------------------


def mikey_part(mikey: bytes) -> Part:
    """The ``application/mikey`` part carrying a MIKEY message (base64)."""
    return Part(
        (("Content-Type", CONTENT_TYPE_MIKEY), ("Content-Transfer-Encoding", "base64")),
        bytes(mikey),
    )


def smime_part(der: bytes) -> Part:
    """The ``application/pkcs7-mime; smime-type=authEnveloped-data`` part carrying a CMS
    body (RFC 8551 §3.2.2, base64)."""
    return Part(
        (
            ("Content-Type", CONTENT_TYPE_SMIME),
            ("Content-Disposition", "attachment; filename=smime.p7m"),
            ("Content-Transfer-Encoding", "base64"),
        ),
        bytes(der),
    )


def _check_uri(uri: str) -> str:
    if not isinstance(uri, str) or not _URI.fullmatch(uri):
        raise MimeError(f"recipient {str(uri)[:80]!r}: 1 to 1024 printable ASCII characters")
    return uri


def recipient_list_part(uris: Sequence[str]) -> Part:
    """The ``application/resource-lists+xml`` part with ``Content-Disposition:
    recipient-list`` (RFC 5365, RFC 4826) naming ``uris`` (1 to :data:`MAX_RECIPIENTS`)."""
    if isinstance(uris, str) or not 1 <= len(uris) <= MAX_RECIPIENTS:
        raise MimeError(f"a recipient list has 1 to {MAX_RECIPIENTS} URIs")
    entries = "".join(
        f'<entry uri="{escape(_check_uri(uri), {chr(34): "&quot;"})}"/>\r\n' for uri in uris
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        f'<resource-lists xmlns="{RESOURCE_LISTS_NS}">\r\n'
        f"<list>\r\n{entries}</list>\r\n</resource-lists>\r\n"
    ).encode("ascii")
    return Part(
        (
            ("Content-Type", CONTENT_TYPE_RESOURCE_LISTS),
            ("Content-Disposition", "recipient-list"),
        ),
        body,
    )


def _blank(text: str | None) -> bool:
    return text is None or not text.strip(" \t\r\n")


def recipient_list(part: Part) -> tuple[str, ...]:
    """The URIs of a recipient-list part (the reverse of :func:`recipient_list_part`):
    one ``<list>`` of ``<entry uri=...>`` (each may have a ``<display-name>``), no DOCTYPE or
    ENTITY, at most :data:`MAX_RECIPIENTS` entries."""
    if part.content_type != CONTENT_TYPE_RESOURCE_LISTS:
        raise MimeError(
            f"a recipient list is {CONTENT_TYPE_RESOURCE_LISTS}, not {part.content_type}"
        )
    disposition = part.header("Content-Disposition")
    if disposition is None or _parse_disposition(disposition)[0] != "recipient-list":
        raise MimeError("a recipient list needs Content-Disposition: recipient-list")
    body = part.body
    if len(body) > MAX_RECIPIENT_LIST_BYTES:
        raise MimeError(
            f"a recipient list of {len(body)} bytes (at most {MAX_RECIPIENT_LIST_BYTES})"
        )
    if b"\x00" in body:
        raise MimeError("a recipient list with a NUL byte (UTF-8 only)")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise MimeError("a recipient list that is not UTF-8") from None
    lowered = body.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise MimeError("a recipient list with a DOCTYPE or ENTITY declaration")
    try:
        root = ET.fromstring(body)  # noqa: S314 - no DOCTYPE, so no entity can be declared
    except (ET.ParseError, ValueError) as exc:
        raise MimeError(f"a recipient list that is not XML: {exc}") from None
    namespace = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if namespace not in ("", "{" + RESOURCE_LISTS_NS + "}"):
        raise MimeError(f"a recipient list in namespace {namespace}")
    if root.tag != namespace + "resource-lists":
        raise MimeError(f"a recipient list whose root is {root.tag}, not resource-lists")
    children = list(root)
    if len(children) != 1 or children[0].tag != namespace + "list" or not _blank(root.text):
        raise MimeError("a recipient list is one <list> in <resource-lists>")
    the_list = children[0]
    if not _blank(the_list.tail) or not _blank(the_list.text):
        raise MimeError("text in a recipient list outside <display-name>")
    uris: list[str] = []
    for element in the_list:
        if not _blank(element.tail):
            raise MimeError("text in a recipient list outside <display-name>")
        if element.tag == namespace + "display-name":
            continue
        if element.tag != namespace + "entry":
            raise MimeError(f"a recipient list with a {element.tag} (only <entry uri=...>)")
        if not _blank(element.text):
            raise MimeError("text in a recipient list outside <display-name>")
        for child in element:
            if child.tag != namespace + "display-name" or not _blank(child.tail) or len(child):
                raise MimeError(f"an <entry> with a {child.tag}")
        uri = element.get("uri")
        if uri is None:
            raise MimeError("an <entry> without a uri")
        uris.append(_check_uri(uri))
        if len(uris) > MAX_RECIPIENTS:
            raise MimeError(f"more than {MAX_RECIPIENTS} recipients")
    if not uris:
        raise MimeError("a recipient list without an entry")
    return tuple(uris)
