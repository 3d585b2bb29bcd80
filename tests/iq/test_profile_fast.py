"""iq.profile's encoder builds the codec's model values through their slots: each such value is
the one the attrs constructor makes from the same fields (equal, same repr and hash), and an
encoded request is the same message text as one built with the constructors."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from iq import codec, profile
from tests.iq.test_profile import configurations, reservations

_SMALL = st.text(max_size=6) | st.none() | st.integers(0, 9)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            (profile._new_action, codec.Action),
            (profile._new_command, codec.Command),
            (profile._new_media, codec.Media),
            (profile._new_stream, codec.Stream),
            (profile._new_events, codec.Events),
            (profile._new_local_control, codec.LocalControl),
            (profile._new_parameter, codec.Parameter),
        ]
    ),
    st.lists(_SMALL, min_size=4, max_size=4),
)
def test_values_made_through_their_slots_are_the_constructed_ones(
    pair: tuple[Any, type], values: list[object]
) -> None:
    make, cls = pair
    fields = values[: len(attrs.fields(cls))]
    made, built = make(*fields), cls(*fields)
    assert type(made) is cls
    assert made == built and repr(made) == repr(built) and hash(made) == hash(built)


def test_the_shared_local_control_is_the_constructed_one() -> None:
    assert profile._local_control(None) == codec.LocalControl("SendReceive", ())


def _rebuilt(value: object) -> object:
    """``value`` made again through the attrs constructors, field by field."""
    if attrs.has(type(value)):
        cls = type(value)
        return cls(*(_rebuilt(getattr(value, f.name)) for f in attrs.fields(cls)))
    if isinstance(value, tuple):
        return tuple(_rebuilt(v) for v in value)
    return value


def _text(actions: tuple[codec.Action, ...]) -> bytes:
    return codec.encode(codec.Message("[192.0.2.1]:2944", (codec.TransactionRequest(7, actions),)))


@settings(max_examples=300, deadline=None)
@given(reservations() | configurations())
def test_encoded_requests_are_those_of_constructed_values(request: Any) -> None:
    actions = profile.encode_request(request)
    rebuilt = _rebuilt(actions)
    assert actions == rebuilt and repr(actions) == repr(rebuilt)
    assert _text(actions) == _text(rebuilt)  # type: ignore[arg-type]
