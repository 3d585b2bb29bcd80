"""The user's side of the KMS exchanges: what a message ticket request asks for, and reading
the keys of a reply for a ticket with key forking."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kms.client import (
    MESSAGE_FLAGS,
    MPK_SPI,
    MPKI_SPI,
    MPKR_SPI,
    SESSION_FLAGS,
    forked_keys,
    gtgk_spi,
    message_request_init,
    request_init,
    tgk_spi,
    ticket_keys,
)
from mikey.constants import KeyType
from mikey.errors import MikeyError
from mikey.payloads import Kemac, KeyData, KvSpi, TicketFlag, TicketPolicy

NOW = 1_800_000_000.0
KEY = hashlib.sha256(b"alice").digest()[:16]


def _wanted(policy: TicketPolicy) -> list[tuple[KeyType, bytes, bytes]]:
    (kemac,) = (p for p in policy.payloads() if isinstance(p, Kemac))
    return [(k.key_type, k.key, k.kv.spi) for k in kemac.key_data()]  # type: ignore[union-attr]


def _policy(message: object) -> TicketPolicy:
    (policy,) = (p for p in message.payloads if isinstance(p, TicketPolicy))  # type: ignore[attr-defined]
    return policy


def test_a_message_request_asks_for_one_gtgk_no_tgk_and_key_forking() -> None:
    request = message_request_init(
        "sip:alice@e2ae.lab", KEY, ("sip:bob@e2ae.lab",), NOW, kms="kms", csb_id=1
    )
    policy = _policy(request)
    assert policy.flags == MESSAGE_FLAGS
    assert _wanted(policy) == [(KeyType.GTGK, b"", gtgk_spi(1))]


def test_request_init_without_gtgks_asks_for_tgks_as_before() -> None:
    randri = b"R" * 16
    plain = request_init("sip:a@x", KEY, (), NOW, kms="kms", csb_id=1, randri=randri)
    explicit = request_init("sip:a@x", KEY, (), NOW, kms="kms", csb_id=1, randri=randri, gtgks=0)
    assert plain == explicit
    assert _policy(plain).flags == SESSION_FLAGS
    assert _wanted(_policy(plain)) == [(KeyType.TGK, b"", tgk_spi(1))]
    both = request_init("sip:a@x", KEY, (), NOW, kms="kms", csb_id=1, sessions=2, gtgks=1)
    assert [kind for kind, _, _ in _wanted(_policy(both))] == [
        KeyType.TGK,
        KeyType.TGK,
        KeyType.GTGK,
    ]


@given(st.integers(min_value=1, max_value=(1 << 31) - 1))
def test_gtgk_spis_never_meet_tgk_or_mpk_spis(n: int) -> None:
    spi = gtgk_spi(n)
    assert len(spi) == 4 and spi[0] & 0x80
    assert spi not in (MPK_SPI, MPKI_SPI, MPKR_SPI)
    assert all(spi != tgk_spi(m) for m in (1, 32, n))


def test_gtgk_spi_takes_31_bits() -> None:
    for bad in (0, 1 << 31):
        with pytest.raises(ValueError):
            gtgk_spi(bad)


def _mpk(spi: bytes, key: bytes) -> KeyData:
    return KeyData(KeyType.MPK, key, kv=KvSpi(spi))


def test_forked_keys_reads_mpki_mpkr_gtgks_and_tgks() -> None:
    keys = (
        _mpk(MPKI_SPI, b"i" * 16),
        _mpk(MPKR_SPI, b"r" * 16),
        KeyData(KeyType.GTGK, b"g" * 16, kv=KvSpi(gtgk_spi(1))),
        KeyData(KeyType.TGK, b"t" * 16, kv=KvSpi(tgk_spi(1))),
    )
    got = forked_keys(keys)
    assert (got.mpki, got.mpkr) == (b"i" * 16, b"r" * 16)
    assert got.gtgks == {gtgk_spi(1): b"g" * 16} and got.tgks == {tgk_spi(1): b"t" * 16}
    # ticket_keys, for tickets without forking, refuses a reply with two MPKs.
    with pytest.raises(MikeyError, match="2 MPKs"):
        ticket_keys(keys)


@pytest.mark.parametrize(
    "keys",
    [
        (_mpk(MPK_SPI, b"m" * 16),),
        (_mpk(MPKI_SPI, b"i" * 16),),
        (_mpk(MPKI_SPI, b"i" * 16), _mpk(MPKR_SPI, b"r" * 16), _mpk(MPKR_SPI, b"s" * 16)),
    ],
)
def test_forked_keys_needs_one_mpki_and_one_mpkr(keys: tuple[KeyData, ...]) -> None:
    with pytest.raises(MikeyError):
        forked_keys(keys)


def test_message_flags_are_the_mikey_transfer_ones() -> None:
    from mikey import transfer

    assert MESSAGE_FLAGS is transfer.MESSAGE_FLAGS
    assert MESSAGE_FLAGS & TicketFlag.I and not MESSAGE_FLAGS & TicketFlag.F
