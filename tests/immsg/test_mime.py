"""immsg.mime: the strict MIME subset of the protected MESSAGE body, its parts, and the Python
``email`` package as an independent reader and writer of the same bytes."""

from __future__ import annotations

import base64
import email
import email.policy
import subprocess
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart

import pytest
from hypothesis import given
from hypothesis import strategies as st

from immsg import cms, mime
from immsg.mime import (
    MimeError,
    Part,
    encode_part,
    entity,
    mikey_part,
    multipart,
    parse_entity,
    parse_multipart,
    recipient_list,
    recipient_list_part,
    smime_part,
)
from tests.conftest import require_tool

MIKEY = bytes(range(1, 120))
DER = b"\x30\x82" + bytes(range(256)) * 2


def _message_parts() -> list[Part]:
    return [mikey_part(MIKEY), smime_part(DER), recipient_list_part(["sip:bob@example.com"])]


def _error(call, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(MimeError) as info:
        call(*args)
    assert info.value.reason
    return info.value.reason


# --- parts ---------------------------------------------------------------------------------


def test_mikey_part() -> None:
    part = mikey_part(MIKEY)
    assert part.content_type == "application/mikey"
    assert part.header("content-transfer-encoding") == "base64"
    data = encode_part(part)
    head, _, text = data.partition(b"\r\n\r\n")
    assert head == b"Content-Type: application/mikey\r\nContent-Transfer-Encoding: base64"
    lines = text.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines) and len(lines[0]) == 76
    assert base64.b64decode(b"".join(lines)) == MIKEY


def test_smime_part() -> None:
    part = smime_part(DER)
    assert part.content_type == "application/pkcs7-mime"
    assert part.params == {"smime-type": "authEnveloped-data", "name": "smime.p7m"}
    assert part.header("Content-Disposition") == "attachment; filename=smime.p7m"
    assert parse_entity(encode_part(part)) == part


def test_recipient_list_round_trip_and_escaping() -> None:
    uris = ["sip:bob@example.com", "sip:a@b.c?x=1&y=<2>", "tel:+1\"2'3"]
    part = recipient_list_part(uris)
    assert part.content_type == "application/resource-lists+xml"
    assert part.header("Content-Disposition") == "recipient-list"
    assert b"&amp;" in part.body and b"&lt;" in part.body and b"&quot;" in part.body
    assert b'xmlns="urn:ietf:params:xml:ns:resource-lists"' in part.body
    assert recipient_list(parse_entity(encode_part(part))) == tuple(uris)


def test_recipient_list_from_rfc_5365() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
        b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"\r\n'
        b'    xmlns:cp="urn:ietf:params:xml:ns:copycontrol">\r\n'
        b"  <list>\r\n"
        b'    <entry uri="sip:bill@example.com" cp:copyControl="to" />\r\n'
        b'    <entry uri="sip:joe@example.org" cp:copyControl="cc" />\r\n'
        b'    <entry uri="sip:ted@example.net" cp:copyControl="bcc" />\r\n'
        b"  </list>\r\n"
        b"</resource-lists>\r\n"
    )
    part = Part(
        (
            ("Content-Type", "application/resource-lists+xml"),
            ("Content-Disposition", "recipient-list"),
        ),
        body,
    )
    assert recipient_list(part) == (
        "sip:bill@example.com",
        "sip:joe@example.org",
        "sip:ted@example.net",
    )


def _list_part(body: bytes, disposition: str = "recipient-list") -> Part:
    return Part(
        (
            ("Content-Type", "application/resource-lists+xml"),
            ("Content-Disposition", disposition),
        ),
        body,
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "b">]><resource-lists><list>'
            b'<entry uri="&a;"/></list></resource-lists>',
            "DOCTYPE",
        ),
        (b"<resource-lists><list><entry uri='x'/>", "not XML"),
        (b"<resource-lists><list></list></resource-lists>", "without an entry"),
        (b"<resource-lists><list><entry/></list></resource-lists>", "without a uri"),
        (b"<resource-lists><list><entry uri='a b'/></list></resource-lists>", "printable"),
        (b"<resource-lists><list><external anchor='x'/></list></resource-lists>", "external"),
        (b"<resource-lists><list/><list/></resource-lists>", "one <list>"),
        (b"<other><list><entry uri='x'/></list></other>", "root"),
        (b"<resource-lists><list>text<entry uri='x'/></list></resource-lists>", "text"),
        (b"<x:resource-lists xmlns:x='urn:other'><list/></x:resource-lists>", "namespace"),
        (b"<resource-lists>" + b"\x00" + b"</resource-lists>", "NUL"),
        (b"<resource-lists>\xff</resource-lists>", "UTF-8"),
        (
            b"<resource-lists><list>"
            + b"<entry uri='sip:a'/>" * (mime.MAX_RECIPIENTS + 1)
            + b"</list></resource-lists>",
            "more than 100",
        ),
        (
            b"<resource-lists>" + b" " * mime.MAX_RECIPIENT_LIST_BYTES + b"</resource-lists>",
            "bytes",
        ),
    ],
)
def test_recipient_list_refuses(body: bytes, words: str) -> None:
    assert words in _error(recipient_list, _list_part(body))


def test_recipient_list_needs_its_type_and_disposition() -> None:
    good = recipient_list_part(["sip:a@b"]).body
    assert "recipient-list" in _error(recipient_list, _list_part(good, "attachment"))
    other = Part(
        (("Content-Type", "application/xml"), ("Content-Disposition", "recipient-list")), good
    )
    assert "application/xml" in _error(recipient_list, other)


@pytest.mark.parametrize("uris", [[], ["sip:a"] * 101, ["sip:a b"], [""], ["sip:\u00e9"]])
def test_recipient_list_part_refuses(uris: list[str]) -> None:
    _error(recipient_list_part, uris)


# --- entities ------------------------------------------------------------------------------


def test_entity_layout() -> None:
    data = entity("text/plain; charset=utf-8", b"hello\r\n", extra=[("Content-ID", "<m1@x>")])
    assert data == b"Content-Type: text/plain; charset=utf-8\r\nContent-ID: <m1@x>\r\n\r\nhello\r\n"
    part = parse_entity(data)
    assert part.content_type == "text/plain"
    assert part.params == {"charset": "utf-8"}
    assert part.header("content-id") == "<m1@x>"
    assert part.body == b"hello\r\n"


def test_entity_of_8bit_content_says_binary() -> None:
    data = entity("text/plain; charset=utf-8", "h\u00e9\nllo".encode())
    part = parse_entity(data)
    assert part.header("Content-Transfer-Encoding") == "binary"
    assert part.body == "h\u00e9\nllo".encode()


def test_entity_with_base64() -> None:
    data = entity(
        "application/octet-stream", bytes(300), extra=[("Content-Transfer-Encoding", "base64")]
    )
    assert b"AAAA" in data
    assert parse_entity(data).body == bytes(300)


def test_content_type_parameters() -> None:
    part = Part((("Content-Type", 'Multipart/Mixed ; Boundary="a b\\"c" ;x=y'),), b"")
    assert part.content_type == "multipart/mixed"
    assert part.params == {"boundary": 'a b"c', "x": "y"}


def test_folded_headers_are_unfolded() -> None:
    part = parse_entity(b"Content-Type: text/plain;\r\n charset=us-ascii\r\n\r\nx")
    assert part.params == {"charset": "us-ascii"}
    assert part.header("Content-Type") == "text/plain; charset=us-ascii"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"Content-ID: <x>\r\n\r\nbody", "without Content-Type"),
        (b"\r\nbody", "without Content-Type"),
        (b"Content-Type: text/plain\r\nbody", "no blank line"),
        (b"Content-Type: text/plain\n\nbody", "no blank line"),
        (b"Content-Type: text/plain\r\nX: a\nb\r\n\r\n", "CRLF"),
        (b"Content-Type: text\r\n\r\n", "type/subtype"),
        (b"Content-Type: text/plain; a\r\n\r\n", "without '='"),
        (b"Content-Type: text/plain; a=1; A=2\r\n\r\n", "twice"),
        (b"Content-Type: text/plain (comment)\r\n\r\n", "expected ';'"),
        (b"Content-Type: a/b\r\nContent-Type: a/b\r\n\r\n", "twice"),
        (b"Content-Type: a/b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n", "quoted"),
        (b"Content-Type: a/b\r\nBad Name: x\r\n\r\n", "not a header field"),
        (b" Content-Type: a/b\r\n\r\n", "continuation"),
        (b"Content-Type: a/\xc3\xa9\r\n\r\n", "non-ASCII"),
        (b"Content-Type: a/b\r\n\r\n\xff", "8-bit"),
        (b"Content-Type: a/b\r\n\r\nx\ny", "CR or LF"),
        (b"Content-Type: a/b\r\n\r\n" + b"x" * 999, "longer than 998"),
        (b"Content-Type: a/b\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\x00", "NUL"),
        (b"Content-Type: a/b\r\nX: " + b"x" * 1000 + b"\r\n\r\n", "longer than 998"),
        (b"Content-Type: a/b\r\n" + b"X: y\r\n" * 1000 + b"\r\n", "header block"),
        (b"Content-Type: a/b\r\n" + b"X: y\r\n" * 1000, "header block larger"),
        (b"x" * (mime.MAX_MIME_BYTES + 1), "at most"),
    ],
)
def test_parse_entity_refuses(data: bytes, words: str) -> None:
    assert words in _error(parse_entity, data)


_B64 = b"Content-Type: a/b\r\nContent-Transfer-Encoding: base64\r\n\r\n"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b"AAA", "bad base64"),
        (b"AA=A", "bad base64"),
        (b"AA==AA==", "bad base64"),
        (b"AA*A", "bad base64"),
        (b"QR==", "canonical"),
        (b"A" * 80, "longer than 76"),
        (b"AAAA\r\n\r\nAAAA", "empty line"),
        (b"AAAA\nAAAA", "not CRLF"),
    ],
)
def test_bad_base64_is_refused(text: bytes, words: str) -> None:
    assert words in _error(parse_entity, _B64 + text)


def test_base64_may_end_in_crlf() -> None:
    assert parse_entity(_B64 + b"AAAA\r\nAAAA\r\n").body == bytes(6)


@pytest.mark.parametrize(
    "headers",
    [
        (("Content-Type", "a/b"), ("X", "a\r\nb")),
        (("Content-Type", "a/b"), ("X", " padded")),
        (("Content-Type", "a/b"), ("Bad:Name", "x")),
        (("Content-Type", "a/b"), ("X", "\u00e9")),
        (("X", "y"),),
    ],
)
def test_encode_part_refuses_bad_headers(headers: tuple[tuple[str, str], ...]) -> None:
    _error(encode_part, Part(headers, b""))


def test_encode_part_refuses_a_body_its_encoding_cannot_carry() -> None:
    _error(encode_part, Part((("Content-Type", "a/b"),), b"\xff"))
    _error(
        encode_part, Part((("Content-Type", "a/b"), ("Content-Transfer-Encoding", "8bit")), b"a\nb")
    )
    assert encode_part(
        Part((("Content-Type", "a/b"), ("Content-Transfer-Encoding", "binary")), b"a\nb\x00")
    ).endswith(b"\r\n\r\na\nb\x00")


# --- multipart -----------------------------------------------------------------------------


def test_multipart_round_trip() -> None:
    parts = _message_parts()
    content_type, body = multipart(parts)
    boundary = content_type.split("boundary=")[1]
    assert content_type.startswith("multipart/mixed; boundary=")
    assert len(boundary) == 24 and int(boundary, 16) >= 0
    assert body.startswith(b"--" + boundary.encode() + b"\r\nContent-Type: application/mikey\r\n")
    assert body.endswith(b"\r\n--" + boundary.encode() + b"--\r\n")
    assert parse_multipart(content_type, body) == tuple(parts)


def test_a_given_boundary_is_used_and_quoted_when_needed() -> None:
    content_type, body = multipart([mikey_part(b"x")], boundary="a b:c")
    assert content_type == 'multipart/mixed; boundary="a b:c"'
    assert body.startswith(b"--a b:c\r\n")
    assert parse_multipart(content_type, body) == (mikey_part(b"x"),)
    content_type, _ = multipart([mikey_part(b"x")], boundary="simple", subtype="related")
    assert content_type == "multipart/related; boundary=simple"


def test_a_boundary_that_occurs_in_a_part_is_refused() -> None:
    part = Part((("Content-Type", "text/plain"),), b"--sep\r\n")
    assert "occurs in part 1" in _error(lambda: multipart([part], boundary="sep"))


def test_preamble_and_epilogue_are_allowed() -> None:
    content_type, body = multipart(_message_parts(), boundary="b0")
    framed = b"This is a preamble.\r\nstill\r\n" + body + b"an epilogue\r\n"
    assert parse_multipart(content_type, framed) == tuple(_message_parts())
    padded = body.replace(b"--b0\r\n", b"--b0 \t\r\n", 1)
    assert parse_multipart(content_type, padded) == tuple(_message_parts())


def test_the_python_email_package_reads_ours() -> None:
    content_type, body = multipart(_message_parts())
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + body,
        policy=email.policy.SMTP,
    )
    parts = list(message.iter_parts())  # type: ignore[attr-defined]
    assert [p.get_content_type() for p in parts] == [
        "application/mikey",
        "application/pkcs7-mime",
        "application/resource-lists+xml",
    ]
    assert parts[0].get_payload(decode=True) == MIKEY
    assert parts[1].get_payload(decode=True) == DER
    assert parts[1].get_param("smime-type") == "authEnveloped-data"


def test_we_read_the_python_email_package_s() -> None:
    outer = MIMEMultipart("mixed")
    outer.attach(MIMEApplication(MIKEY, "mikey"))
    smime = MIMEApplication(DER, "pkcs7-mime", name="smime.p7m")
    smime.set_param("smime-type", "authEnveloped-data")
    outer.attach(smime)
    data = outer.as_bytes(policy=email.policy.SMTP)
    head, _, body = data.partition(b"\r\n\r\n")
    content_type = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-type:")
    )
    parts = parse_multipart(content_type, body)
    assert [p.content_type for p in parts] == ["application/mikey", "application/pkcs7-mime"]
    assert parts[0].body == MIKEY and parts[1].body == DER
    assert parts[1].params["smime-type"] == "authEnveloped-data"


def _wrap(*parts: bytes, boundary: bytes = b"b0", close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--" + boundary + b"--\r\n" if close else b"")


_P = b"Content-Type: text/plain\r\n\r\nhi"


@pytest.mark.parametrize(
    ("content_type", "body", "words"),
    [
        ("multipart/mixed", _wrap(_P), "without a boundary"),
        ("multipart/mixed; boundary=" + "x" * 71, _wrap(_P, boundary=b"x" * 71), "1 to 70"),
        ('multipart/mixed; boundary="b0 "', _wrap(_P, boundary=b"b0 "), "1 to 70"),
        ('multipart/mixed; boundary=""', _wrap(_P, boundary=b""), "1 to 70"),
        ('multipart/mixed; boundary="a\\"b"', _wrap(_P, boundary=b'a"b'), "1 to 70"),
        ("text/plain; boundary=b0", _wrap(_P), "not multipart"),
        ("multipart/mixed; boundary=b0", _wrap(_P, close=False), "no close delimiter"),
        ("multipart/mixed; boundary=b0", _wrap(_P)[:-9], "no close delimiter"),
        ("multipart/mixed; boundary=b0", b"no delimiter here", "no boundary delimiter"),
        ("multipart/mixed; boundary=b0", b"--b0--\r\n", "without a body part"),
        ("multipart/mixed; boundary=b0", _wrap(*[_P] * 9), "more than 8 parts"),
        ("multipart/mixed; boundary=b0", _wrap(_P, b"Content-ID: <x>\r\n\r\nx"), "Content-Type"),
        ("multipart/mixed; boundary=b0", _wrap(b"\r\nno headers"), "Content-Type"),
        ("multipart/mixed; boundary=b0", _wrap(_P.replace(b"hi", b"--b0x")), "inside part 1"),
        ("multipart/mixed; boundary=b0", _wrap(_P) + b"--b0\r\n", "epilogue"),
        ("multipart/mixed; boundary=b0", b"pre --b0\r\n" + _wrap(_P), "preamble"),
        (
            "multipart/mixed; boundary=b0",
            _wrap(_P).replace(b"--b0--\r\n", b"--b0--x"),
            "close delimiter line",
        ),
        (
            "multipart/mixed; boundary=b0",
            _wrap(b"Content-Type: a/b\r\n" + b"X: y\r\n" * 700 + b"\r\n"),
            "header block",
        ),
        (
            "multipart/mixed; boundary=b0",
            _wrap(b"Content-Type: a/b\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!"),
            "bad base64",
        ),
        ("multipart/mixed; boundary=b0", b"x" * (mime.MAX_MIME_BYTES + 1), "at most"),
    ],
)
def test_parse_multipart_refuses(content_type: str, body: bytes, words: str) -> None:
    assert words in _error(parse_multipart, content_type, body)


def test_multipart_refuses_no_parts_and_too_many() -> None:
    assert "1 to 8" in _error(lambda: multipart([]))
    assert "1 to 8" in _error(lambda: multipart([mikey_part(b"x")] * 9))
    assert "token" in _error(lambda: multipart([mikey_part(b"x")], subtype="a/b"))


def test_at_most_max_parts_are_taken() -> None:
    parts = [mikey_part(bytes([i])) for i in range(mime.MAX_PARTS)]
    content_type, body = multipart(parts)
    assert parse_multipart(content_type, body) == tuple(parts)


# --- properties ----------------------------------------------------------------------------

_NAMES = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z").filter(
    lambda n: n.lower() not in ("content-type", "content-transfer-encoding", "content-disposition")
)
_VALUES = st.from_regex(r"\A([!-~]([ -~]{0,30}[!-~])?)?\Z")
_TYPES = st.sampled_from(
    [
        "text/plain",
        "application/mikey",
        "application/octet-stream; name=x",
        'text/plain; charset="a b"',
    ]
)
_LINE = st.binary(max_size=80).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00"))


@st.composite
def _parts(draw: st.DrawFn) -> Part:
    encoding = draw(st.sampled_from([None, "7bit", "8bit", "binary", "base64"]))
    if encoding in (None, "7bit"):
        body = b"\r\n".join(
            bytes(c & 0x7F for c in line if c & 0x7F not in (0, 10, 13))
            for line in draw(st.lists(_LINE, max_size=5))
        )
    elif encoding == "8bit":
        body = b"\r\n".join(draw(st.lists(_LINE, max_size=5)))
    else:
        body = draw(st.binary(max_size=500))
    headers = [("Content-Type", draw(_TYPES))]
    headers += draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=3))
    if encoding is not None:
        headers.append(("Content-Transfer-Encoding", encoding))
    return Part(tuple(draw(st.permutations(headers))), body)


@given(st.lists(_parts(), min_size=1, max_size=mime.MAX_PARTS))
def test_property_multipart_round_trip(parts: list[Part]) -> None:
    content_type, body = multipart(parts)
    assert parse_multipart(content_type, body) == tuple(parts)


@given(_parts())
def test_property_entity_round_trip(part: Part) -> None:
    assert parse_entity(encode_part(part)) == part


@given(st.binary(max_size=600))
def test_property_random_bytes_into_parse_entity(data: bytes) -> None:
    try:
        parse_entity(data)
    except MimeError:
        pass


@given(st.binary(max_size=600), st.sampled_from(["b0", "multipart/mixed", "x"]))
def test_property_random_bytes_into_parse_multipart(data: bytes, boundary: str) -> None:
    try:
        parse_multipart(f"multipart/mixed; boundary={boundary}", b"--b0\r\n" + data)
    except MimeError:
        pass
    try:
        parse_multipart(data.decode("latin-1"), data)
    except MimeError:
        pass


@given(st.lists(_parts(), min_size=1, max_size=3), st.data())
def test_property_damaged_multipart_gives_only_mime_error(
    parts: list[Part], data: st.DataObject
) -> None:
    content_type, body = multipart(parts)
    cut = data.draw(st.integers(0, len(body)))
    pos = data.draw(st.integers(0, len(body) - 1))
    bad = bytearray(body)
    bad[pos] ^= data.draw(st.integers(1, 255))
    for damaged in (body[:cut], bytes(bad)):
        try:
            parse_multipart(content_type, damaged)
        except MimeError:
            pass


@given(st.binary(max_size=400))
def test_property_random_bytes_into_recipient_list(data: bytes) -> None:
    try:
        recipient_list(_list_part(b"<resource-lists><list>" + data))
    except MimeError:
        pass
    try:
        recipient_list(_list_part(data))
    except MimeError:
        pass


@given(st.lists(st.from_regex(r"\A[!-~]{1,40}\Z"), min_size=1, max_size=20))
def test_property_recipient_list_round_trip(uris: list[str]) -> None:
    assert recipient_list(recipient_list_part(uris)) == tuple(uris)


# --- the S/MIME part with a CMS body, and openssl as its peer ------------------------------

_KEK = bytes(range(16))
_KEK_ID = b"\x01\x02"
_CONTENT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello Bob\r\n"


def _openssl(*args: str, data: bytes) -> bytes:
    tool = require_tool("openssl")
    done = subprocess.run([tool, *args], input=data, capture_output=True, check=False, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def test_a_sealed_body_survives_the_message_multipart() -> None:
    der = cms.seal(_CONTENT, _KEK, _KEK_ID)
    content_type, body = multipart([mikey_part(MIKEY), smime_part(der)])
    mikey, smime = parse_multipart(content_type, body)
    assert mikey.body == MIKEY
    assert cms.open_(smime.body, _KEK, _KEK_ID) == _CONTENT


def test_openssl_reads_our_smime_part() -> None:
    data = encode_part(smime_part(cms.seal(_CONTENT, _KEK, _KEK_ID)))
    out = _openssl(
        "cms", "-decrypt", "-binary", "-inform", "SMIME",
        "-secretkey", _KEK.hex(), "-secretkeyid", _KEK_ID.hex(), data=data,
    )  # fmt: skip
    assert out == _CONTENT


def test_we_read_openssl_s_smime_entity() -> None:
    data = _openssl(
        "cms", "-encrypt", "-binary", "-aes-128-gcm", "-crlfeol", "-outform", "SMIME",
        "-secretkey", _KEK.hex(), "-secretkeyid", _KEK_ID.hex(), data=_CONTENT,
    )  # fmt: skip
    # openssl ends its base64 lines in LF even with -crlfeol (that is for the headers only):
    # a strict reader refuses that, so the lines are made canonical first, as RFC 2049 §4 asks
    # of the sender
    with pytest.raises(MimeError, match="not CRLF"):
        parse_entity(data)
    part = parse_entity(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert part.content_type == "application/pkcs7-mime"
    assert part.params["smime-type"] == "authEnveloped-data"
    assert cms.open_(part.body, _KEK, _KEK_ID) == _CONTENT
