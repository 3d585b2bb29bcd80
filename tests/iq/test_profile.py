"""Property tests: any profile operation survives encode -> H.248 text -> decode unchanged."""

from __future__ import annotations

import typing

from hypothesis import given, settings
from hypothesis import strategies as st

from certs.fingerprint import HASH_FUNCS, Fingerprint
from iq import codec, profile
from iq.codec import Message, TransactionReply, TransactionRequest

_SIZES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}

fingerprints = st.sampled_from(HASH_FUNCS).flatmap(
    lambda h: st.binary(min_size=_SIZES[h], max_size=_SIZES[h]).map(lambda d: Fingerprint(h, d))
)
hosts = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
endpoints = st.builds(profile.Endpoint, hosts, st.integers(0, 65535))
setups = st.sampled_from(profile.SETUPS)
medias = st.sampled_from(("message", "application"))
call_ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60
)


@st.composite
def reservations(draw: st.DrawFn) -> profile.ReserveRequest:
    numbers = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=4, unique=True))
    streams = tuple(
        profile.StreamReservation(
            stream=n,
            media=draw(medias),
            access_setup=draw(setups),
            core_setup=draw(setups),
            ue_fingerprints=tuple(draw(st.lists(fingerprints, max_size=3))),
            ue_address=draw(st.none() | endpoints),
            ue_setup=draw(st.none() | setups),
            core_address=draw(st.none() | endpoints),
            core_remote_setup=draw(st.none() | setups),
        )
        for n in numbers
    )
    return profile.ReserveRequest(
        call_id=draw(call_ids),
        streams=streams,
        context=draw(st.none() | st.integers(0, 2**32 - 2)),
        agw_fingerprint_hash=draw(st.sampled_from(HASH_FUNCS)),
    )


def _through_wire(
    actions: tuple[codec.Action, ...], reply: bool = False
) -> tuple[codec.Action, ...]:
    transaction = TransactionReply(1, actions) if reply else TransactionRequest(1, actions)
    (decoded,) = codec.decode(codec.encode(Message("<agw>", (transaction,)))).transactions
    assert isinstance(decoded, TransactionReply if reply else TransactionRequest)
    return decoded.actions


@settings(max_examples=150, deadline=None)
@given(reservations())
def test_reserve_request_round_trips(request: profile.ReserveRequest) -> None:
    assert profile.decode_request(_through_wire(profile.encode_request(request))) == request


@settings(max_examples=100, deadline=None)
@given(reservations(), st.integers(0, 2**32 - 2), fingerprints, endpoints, endpoints)
def test_reserve_reply_round_trips(
    request: profile.ReserveRequest,
    context: int,
    agw_fp: Fingerprint,
    access: profile.Endpoint,
    core: profile.Endpoint,
) -> None:
    reply = profile.ReserveReply(
        context,
        tuple(
            profile.ReservedStream(
                s.stream,
                f"acc/{context}/{s.stream}",
                f"core/{context}/{s.stream}",
                access,
                core,
                agw_fp,
                s.access_setup,
                s.core_setup,
            )
            for s in request.streams
        ),
    )
    actions = _through_wire(profile.encode_reply(request, reply), reply=True)
    assert profile.decode_reply(request, actions) == reply


@st.composite
def configurations(draw: st.DrawFn) -> profile.ConfigureRequest:
    numbers = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True))
    streams = []
    for n in numbers:
        config = profile.StreamConfiguration(
            stream=n,
            media=draw(medias),
            access_termination=f"acc/9/{n}",
            core_termination=f"core/9/{n}",
            ue_address=draw(st.none() | endpoints),
            ue_setup=draw(st.none() | setups),
            ue_fingerprints=tuple(draw(st.lists(fingerprints, max_size=2))),
            core_address=draw(st.none() | endpoints),
            core_remote_setup=draw(st.none() | setups),
            access_setup=draw(st.none() | setups),
            core_setup=draw(st.none() | setups),
            establish_tls=draw(st.booleans()),
        )
        if config.changes_access or config.changes_core:
            streams.append(config)
    if not streams:
        streams.append(
            profile.StreamConfiguration(1, "message", "acc/9/1", "core/9/1", establish_tls=True)
        )
    return profile.ConfigureRequest(9, tuple(streams))


def _as_received(request: profile.ConfigureRequest) -> profile.ConfigureRequest:
    import attrs

    streams = []
    for s in request.streams:
        media = s.media
        if not (s.ue_address or s.core_address):
            media = None  # no m= line travels: the media is not known on the wire
        streams.append(
            attrs.evolve(
                s,
                media=media,
                access_termination=s.access_termination if s.changes_access else "",
                core_termination=s.core_termination if s.changes_core else "",
            )
        )
    return attrs.evolve(request, streams=tuple(streams))


@settings(max_examples=150, deadline=None)
@given(configurations())
def test_configure_request_round_trips(request: profile.ConfigureRequest) -> None:
    decoded = profile.decode_request(_through_wire(profile.encode_request(request)))
    assert decoded == _as_received(request)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(typing.get_args(profile.EventKind)),
    st.sampled_from(typing.get_args(profile.TlsFailureCause)),
    st.integers(0, 2**32 - 1),
    st.integers(1, 65535),
    st.floats(0, 4e9),
    st.none() | endpoints.map(str),
)
def test_notify_round_trips(
    kind: str, cause: str, context: int, stream: int, now: float, peer: str | None
) -> None:
    event = profile.IqEvent(
        kind,  # type: ignore[arg-type]
        context,
        f"acc/{stream}",
        stream,
        profile.timestamp(now),
        cause=cause if kind == "tls-failure" else None,  # type: ignore[arg-type]
        peer=peer,
    )
    request = profile.NotifyRequest(event)
    assert profile.decode_request(_through_wire(profile.encode_request(request))) == request


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(
        st.tuples(
            st.integers(0, 2**63),
            st.integers(0, 2**63),
            st.integers(0, 2**40),
            st.integers(0, 2**40),
            st.none() | st.sampled_from(profile.TLS_RESULTS),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_release_reply_round_trips(
    context: int, rows: list[tuple[int, int, int, int, typing.Any]]
) -> None:
    request = profile.ReleaseRequest(context)
    reply = profile.ReleaseReply(
        context,
        tuple(profile.TerminationStatistics(f"acc/{i}", *row) for i, row in enumerate(rows)),
    )
    actions = _through_wire(profile.encode_reply(request, reply), reply=True)
    assert profile.decode_reply(request, actions) == reply
    assert profile.decode_request(_through_wire(profile.encode_request(request))) == request
