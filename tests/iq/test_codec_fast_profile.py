"""iq.profile: the quick reading of an ``a=fingerprint`` value against Fingerprint.parse."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from certs.errors import CertsError
from certs.fingerprint import HASH_FUNCS, Fingerprint
from e2ae.tcpmedia import SETUPS
from iq import profile
from iq.errors import LocalIqError, ProfileError

_SIZES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}


@st.composite
def _values(draw: st.DrawFn) -> str:
    """``<hash> <HEX:...>`` of the right size, now and then with one or two things wrong."""
    name = draw(st.sampled_from(HASH_FUNCS))
    pairs = [draw(st.sampled_from(["00", "9F", "ab", "A0", "fF"])) for _ in range(_SIZES[name])]
    parts = [name, " ", ":".join(pairs)]
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, 2))
        parts[at] = draw(
            st.sampled_from(
                [
                    ["SHA-256", "md5", "sha-2", "sha-256x", "", " sha-1", "a=fingerprint:sha-1"],
                    ["", "  ", "\t", " : "],
                    [
                        parts[2][:-3],
                        parts[2] + ":00",
                        parts[2][3:],
                        parts[2].replace(":", ""),
                        parts[2].replace(":", "-", 1),
                        parts[2][:-1] + "G",
                        parts[2][:-1],
                        parts[2] + " ",
                        parts[2] + ":",
                        "\u0661" + parts[2][1:],
                    ],
                ][at]
            )
        )
    return "".join(parts)


def _outcome(parse: object, value: str) -> object:
    assert callable(parse)
    try:
        return parse(value)
    except CertsError as exc:
        return (type(exc), str(exc))


@settings(max_examples=2000, deadline=None)
@given(_values() | st.text(max_size=20))
def test_quick_fingerprint_reading_is_fingerprint_parse(value: str) -> None:
    assert _outcome(profile._fingerprint, value) == _outcome(Fingerprint.parse, value)


# ---------------------------------------------------------------- objects made without attrs


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-1, 65536),
    st.sampled_from(["message", "application"]),
    st.sampled_from(SETUPS),
    st.sampled_from(SETUPS),
    st.sampled_from([None, *SETUPS]),
    st.sampled_from([None, ("192.0.2.1", 7394), ("2001:db8::1", 0)]),
)
def test_stream_reservation_made_directly_is_the_validated_one(
    stream: int,
    media: str,
    access: str,
    core: str,
    ue_setup: str | None,
    address: tuple[str, int] | None,
) -> None:
    endpoint = None if address is None else profile.Endpoint(*address)
    values = (media, access, core, (), endpoint, ue_setup, endpoint, ue_setup)
    try:
        expected: object = profile.StreamReservation(stream, *values)  # type: ignore[arg-type]
    except LocalIqError as exc:
        expected = str(exc)
    try:
        made: object = profile._new_stream_reservation(stream, *values)
    except LocalIqError as exc:
        made = str(exc)
    assert made == expected


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["192.0.2.1", "2001:DB8::1", "$", "::ffff:1.2.3.4", "01.2.3.4", "x"]),
    st.sampled_from(["0", "7394", "65535", "65536", "$", "-1"]),
)
def test_endpoint_made_directly_is_the_validated_one(host: str, port: str) -> None:
    lines = ("v=0", f"c=IN IP4 {host}", f"m=message {port} TCP/MSRP *")
    try:
        fragment = profile.parse_sdp(lines, "here")
        made = profile._endpoint(fragment, "here")
    except ProfileError:
        return
    if made is not None:
        assert made == profile.Endpoint(made.host, made.port)
        assert profile.Endpoint(made.host, made.port).host == made.host
