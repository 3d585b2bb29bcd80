"""The lossless SDP model: round-trips, effective values, editing, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcscf.errors import LocalPcscfError, RemotePcscfError, SdpError
from pcscf.sdp import Connection, SessionDescription

FP1 = "sha-256 " + ":".join(["AB"] * 32)
FP2 = "sha-1 " + ":".join(["01"] * 20)

BASIC = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    f"a=fingerprint:{FP1}\r\n"
    "m=message 7394 TCP/TLS/MSRP *\r\ni=chat\r\nb=AS:64\r\na=setup:active\r\n"
    f"m=audio 49170 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\na=fingerprint:{FP2}\r\n"
)


def test_round_trip_and_structure() -> None:
    sdp = SessionDescription.parse(BASIC.encode())
    assert sdp.serialise() == BASIC.encode()
    assert [m.media for m in sdp.media] == ["message", "audio"]
    assert sdp.media[0].port == 7394 and sdp.media[0].proto == "TCP/TLS/MSRP"
    assert sdp.media[0].fmts == ("*",)
    assert sdp.session.lines[0] == "v=0"


def test_lf_only_comes_back_crlf() -> None:
    sdp = SessionDescription.parse(BASIC.replace("\r\n", "\n"))
    assert sdp.serialise() == BASIC.encode()


def test_effective_connection_media_over_session() -> None:
    sdp = SessionDescription.parse(BASIC)
    assert sdp.effective_connection(0) == Connection("IN", "IP4", "192.0.2.1")
    assert sdp.effective_connection(1) == Connection("IN", "IP6", "2001:db8::1")


def test_effective_fingerprints_media_over_session() -> None:
    sdp = SessionDescription.parse(BASIC)
    assert [f.value for f in sdp.effective_fingerprints(0)] == [FP1]
    assert [f.value for f in sdp.effective_fingerprints(1)] == [FP2]
    assert sdp.effective_fingerprints(1, accepted=("sha-256",)) == []


def test_md5_fingerprint_is_skipped_not_fatal() -> None:
    text = BASIC.replace(f"a=fingerprint:{FP2}", "a=fingerprint:md5 " + ":".join(["00"] * 16))
    sdp = SessionDescription.parse(text)
    assert sdp.effective_fingerprints(1) == []


def test_media_c_inserted_after_m_and_i_before_b() -> None:
    sdp = SessionDescription.parse(BASIC)
    sdp.media[0].set_connection(Connection.for_ip("198.51.100.1"))
    assert sdp.media[0].lines[:4] == [
        "m=message 7394 TCP/TLS/MSRP *",
        "i=chat",
        "c=IN IP4 198.51.100.1",
        "b=AS:64",
    ]
    sdp.media[1].set_connection(Connection.for_ip("2001:db8::2"))
    assert sdp.media[1].lines[1] == "c=IN IP6 2001:db8::2"
    assert len([line for line in sdp.media[1].lines if line.startswith("c=")]) == 1


def test_set_port_and_proto_rebuild_only_the_m_line() -> None:
    sdp = SessionDescription.parse(BASIC)
    sdp.media[0].set_port(40002)
    sdp.media[0].set_proto("TCP/MSRP")
    assert sdp.media[0].lines[0] == "m=message 40002 TCP/MSRP *"
    assert sdp.media[0].lines[1:] == ["i=chat", "b=AS:64", "a=setup:active"]
    with pytest.raises(LocalPcscfError):
        sdp.media[0].set_port(70000)


def test_attribute_editing_is_case_insensitive_on_names() -> None:
    sdp = SessionDescription.parse(BASIC.replace("a=setup:active", "a=SETUP:active\r\na=setupx"))
    section = sdp.media[0]
    assert section.attribute_values("setup") == ["active"]
    section.set_attribute("setup", "passive")
    assert "a=setup:passive" in section.lines and "a=setupx" in section.lines
    assert section.remove_attributes("Setup") == 1
    assert section.attribute_values("setupx") == [""]
    section.add_attribute("3ge2ae", "applied")
    assert section.lines[-1] == "a=3ge2ae:applied"


def test_copy_is_independent() -> None:
    sdp = SessionDescription.parse(BASIC)
    other = sdp.copy()
    other.media[0].set_port(1)
    other.session.remove_attributes("fingerprint")
    assert sdp.serialise() == BASIC.encode()


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "empty SDP"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", 1, "must start with v=0"),
        ("v=1\r\n", 1, "unsupported SDP version"),
        ("v=0\r\ns=-\r\n\r\nt=0 0\r\n", 3, "empty line"),
        ("v=0\r\nS=-\r\n", 2, "expected '<type>=<value>'"),
        ("v=0\r\nm=audio 70000 RTP/AVP 0\r\n", 2, "0-65535"),
        ("v=0\r\nm=audio 1/0 RTP/AVP 0\r\n", 2, "port count"),
        ("v=0\r\nm=audio 1 RTP/AVP\r\n", 2, "m= needs"),
        ("v=0\r\nc=IN IP4\r\n", 2, "c= needs"),
        ("v=0\r\na=\r\n", 2, "attribute name"),
        ("v=0\r\na=x\x00y\r\n", 2, "control character"),
        ("v=0\r\na=x\ry\r\n", 2, "control character"),
    ],
)
def test_malformed_names_line_and_reason(text: str, line: int, words: str) -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(text)
    assert info.value.line == line
    assert words in info.value.reason
    assert str(info.value).startswith(f"line {line}: ")
    assert isinstance(info.value, RemotePcscfError)


def test_not_utf8_names_the_line() -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(b"v=0\r\ns=-\r\ni=caf\xe9\r\n")
    assert info.value.line == 3


# --- hypothesis: any valid SDP round-trips byte for byte -------------------------------------

_token = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._+"),
    min_size=1,
    max_size=12,
)
_value = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\r\n\x00"
    ),
    max_size=30,
)
_attribute = st.one_of(
    _token.map(lambda n: f"a={n}"),
    st.tuples(_token, _value).map(lambda t: f"a={t[0]}:{t[1]}"),
)
_other_line = st.tuples(st.sampled_from("iubekrzyx"), _value).map(lambda t: f"{t[0]}={t[1]}")
_c_line = st.sampled_from(
    ["c=IN IP4 192.0.2.1", "c=IN IP6 2001:db8::1", "c=IN IP4 233.252.0.1/127/3", "c=X Y Z"]
)
_m_line = st.tuples(
    _token,
    st.integers(0, 65535),
    st.one_of(st.none(), st.integers(1, 9)),
    st.sampled_from(["RTP/AVP", "TCP/TLS/MSRP", "TCP/MSRP", "TCP/BFCP", "udp/tls/rtp/savpf"]),
    st.lists(_token, min_size=1, max_size=4),
).map(lambda t: f"m={t[0]} {t[1]}{'' if t[2] is None else '/' + str(t[2])} {t[3]} {' '.join(t[4])}")
_section_body = st.lists(st.one_of(_attribute, _other_line, _c_line), max_size=6)


@st.composite
def sdp_texts(draw: st.DrawFn) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-"]
    lines += draw(_section_body)
    for _ in range(draw(st.integers(0, 5))):
        lines.append(draw(_m_line))
        lines += draw(_section_body)
    return "\r\n".join(lines) + "\r\n"


@settings(deadline=None)
@given(sdp_texts())
def test_round_trip_generated(text: str) -> None:
    data = text.encode()
    assert SessionDescription.parse(data).serialise() == data
    assert SessionDescription.parse(text.replace("\r\n", "\n")).serialise() == data


@settings(deadline=None)
@given(sdp_texts())
def test_sections_partition_the_lines(text: str) -> None:
    sdp = SessionDescription.parse(text)
    assert len(sdp.media) == text.count("\r\nm=")
    for section in sdp.media:
        assert section.lines[0].startswith("m=")
        assert not any(line.startswith("m=") for line in section.lines[1:])


@settings(deadline=None)
@given(sdp_texts(), _token)
def test_attribute_lookup_agrees_with_a_plain_scan(text: str, name: str) -> None:
    sdp = SessionDescription.parse(text)
    for section in [sdp.session, *sdp.media]:
        for wanted in {
            name,
            *(line[2:].split(":")[0] for line in section.lines if line[:2] == "a="),
        }:
            prefix = "a=" + wanted.lower()
            expected = [
                line[len(prefix) + 1 :]
                for line in section.lines
                if line[: len(prefix)].lower() == prefix
                and (len(line) == len(prefix) or line[len(prefix)] == ":")
            ]
            assert section.attribute_values(wanted) == expected
        section.remove_attributes(name)
        assert section.attribute_values(name) == []
        section.add_attribute(name, "v")
        assert section.attribute_values(name) == ["v"]


@settings(deadline=None)
@given(st.binary(max_size=300) | sdp_texts().map(lambda t: t.encode()[: len(t) // 2]))
def test_any_bytes_parse_or_sdp_error(data: bytes) -> None:
    try:
        sdp = SessionDescription.parse(b"v=0\r\n" + data)
    except SdpError as exc:
        assert exc.line >= 1 and "\n" not in str(exc)
    else:
        again = SessionDescription.parse(sdp.serialise())
        assert again.serialise() == sdp.serialise()
