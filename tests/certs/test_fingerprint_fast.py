"""Fingerprint.parse's path for the usual spelling against the general parser it stands beside
(Fingerprint._parse): the same Fingerprint, or the same error, for canonical values and for
values one edit away from one (case, white space, prefixes, other characters, lengths)."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from certs.errors import CertsError
from certs.fingerprint import _DIGEST_SIZE, HASH_FUNCS, Fingerprint


def _outcome(parse: object, value: str) -> tuple[object, ...]:
    try:
        fp = parse(value)  # type: ignore[operator]
    except CertsError as exc:
        return ("error", type(exc), str(exc), exc.args, getattr(exc, "reason", None))
    assert type(fp) is Fingerprint
    return ("ok", fp.hash_func, fp.digest, fp.value)


def _same(value: str) -> None:
    assert _outcome(Fingerprint.parse, value) == _outcome(Fingerprint._parse, value)


@st.composite
def canonical(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from((*HASH_FUNCS, "md5", "sha-257", "SHA-256")))
    size = _DIGEST_SIZE.get(name.lower(), 16)
    size += draw(st.sampled_from((0, 0, 0, -1, 1)))
    digest = draw(st.binary(min_size=max(size, 0), max_size=max(size, 0)))
    hexpart = digest.hex(":")
    hexpart = draw(st.sampled_from((hexpart.upper(), hexpart, hexpart.swapcase())))
    return f"{name} {hexpart}"


EDITS = st.sampled_from(" \t\n\r:0aAfFgG\u0663\u00a0\u2003-=")


@st.composite
def edited(draw: st.DrawFn) -> str:
    value = draw(canonical())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(value)))
        kind = draw(st.sampled_from(("replace", "insert", "delete", "prefix", "pad")))
        ch = draw(EDITS)
        if kind == "replace" and at < len(value):
            value = value[:at] + ch + value[at + 1 :]
        elif kind == "insert":
            value = value[:at] + ch + value[at:]
        elif kind == "delete" and at < len(value):
            value = value[:at] + value[at + 1 :]
        elif kind == "prefix":
            value = (
                draw(st.sampled_from(("a=fingerprint:", "fingerprint:", "A=FINGERPRINT: "))) + value
            )
        else:
            value = ch + value + ch
    return value


@settings(max_examples=1500, deadline=None)
@given(canonical())
def test_canonical_values(value: str) -> None:
    _same(value)


@settings(max_examples=3000, deadline=None)
@given(edited())
@example("sha-256 " + ":".join(["AB"] * 31) + ":A ")
@example("sha-1 " + ":".join(["AB"] * 19) + "::A")
@example("sha-1  AB" + ":AB" * 19)
@example("sha-1 " + "AB:" * 19 + "A\u0663")
@example("sha-1 " + ":".join([" A"] * 20))
@example("sha-1 " + ":".join(["AB"] * 19 + ["  "]))  # read with the colons as spaces: shorter
@example("sha-1 " + ":".join(["AB"] * 10 + ["\tA"] + ["AB"] * 9))
@example("sha-1 " + ":".join(["AB"] * 10 + ["A\x0b"] + ["AB"] * 9))
@example("sha-256 " + ":".join(["AB"] * 31).replace(":", " ", 1) + ":AB")
def test_values_near_the_usual_spelling(value: str) -> None:
    _same(value)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_any_text(value: str) -> None:
    _same(value)
