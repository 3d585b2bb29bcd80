"""iq.profile: the quick reading of an ``a=fingerprint`` value against Fingerprint.parse."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from certs.errors import CertsError
from certs.fingerprint import HASH_FUNCS, Fingerprint
from iq import profile

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
