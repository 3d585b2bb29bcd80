"""The MIKEY / MIKEY-TICKET codec: exact layouts, round trips of every payload and message
type, and bad input that only ever raises MikeyError (never IndexError or struct.error)."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mikey import MikeyError, check_composition, decode, encode, samples
from mikey.constants import (
    MAC_LENGTH,
    DataType,
    EncrAlg,
    ErrorNo,
    IdRole,
    IdType,
    KeyType,
    MacAlg,
    PayloadType,
    PrfFunc,
    RandRole,
    TicketType,
    TsRole,
    TsType,
)
from mikey.message import (
    EmptyMap,
    GenericIdEntry,
    GenericIdMap,
    Header,
    Message,
    SrtpIdEntry,
    SrtpIdMap,
    message,
)
from mikey.payloads import (
    Cert,
    Err,
    GeneralExtension,
    Id,
    IdWithRole,
    Kemac,
    KeyData,
    KvInterval,
    KvSpi,
    Payload,
    Rand,
    RandWithRole,
    SecurityPolicy,
    Signature,
    SpParam,
    Ticket,
    TicketFlag,
    TicketPolicy,
    Timestamp,
    TimestampWithRole,
    Verification,
    decode_key_data,
    encode_key_data,
    encode_payload_chain,
    ntp_from_unix,
)
from mikey.wire import Reader

# --- exact layouts, written out by hand from RFC 3830 §6 -----------------------------------


def test_psk_init_bytes_are_the_rfc_3830_layout() -> None:
    m = message(
        DataType.PSK_INIT,
        0x01020304,
        (
            Timestamp(TsType.COUNTER, 0x0A0B0C0D),
            Rand(b"\xaa" * 16),
            Kemac.plain((KeyData(KeyType.TGK, b"\x11" * 16),), MacAlg.HMAC_SHA_1_160, b"\x22" * 20),
        ),
        cs_map=SrtpIdMap((SrtpIdEntry(0, 0xCAFEBABE, 7),)),
        v=True,
    )
    expected = bytes.fromhex(
        "".join(
            [
                # HDR: version 1, PSK init, next T, V=1 PRF 0, CSB ID, #CS 1, SRTP-ID,
                # then policy no / SSRC / ROC
                "01 00 05 80 01020304 01 00 00 cafebabe 00000007",
                # T: next RAND, COUNTER, 32-bit value
                "0b 02 0a0b0c0d",
                # RAND: next KEMAC, len 16
                "01 10" + "aa" * 16,
                # KEMAC: next last, NULL, encr data len 20, ...
                "00 00 0014",
                # ... key data: next last, type TGK / KV NULL, key len 16, key ...
                "00 00 0010" + "11" * 16,
                # ... HMAC-SHA-1-160, MAC
                "01" + "22" * 20,
            ]
        )
    )
    assert encode(m) == expected
    assert decode(expected) == m


def test_generic_id_map_entry_is_the_ts_33_328_h1_layout() -> None:
    """A TLS crypto session: CS ID, Prot type, S=0 #P=0, session data length 0, SPI."""
    header = Header(
        DataType.TRANSFER_INIT,
        0xFFFFFFFF,
        GenericIdMap((GenericIdEntry(3, 0xF0, spi=b"\xde\xad"),)),
        prf_func=PrfFunc.PRF_HMAC_SHA_256,
    )
    data = Message(header, ()).encode()
    # data type 14 = TRANSFER_INIT (RFC 6043 Table 6.1), map type 2 = GENERIC-ID (Table 6.4)
    assert data == bytes.fromhex("01 0e 00 01 ffffffff 01 02  03 f0 00 0000 02 dead")
    assert decode(data).header == header


def test_generic_id_entry_with_policies_and_session_data() -> None:
    entry = GenericIdEntry(1, 0, True, (0, 5), b"\x01\x02\x03", b"")
    assert entry.encode() == bytes.fromhex("01 00 82 00 05 0003 010203 00")
    m = message(DataType.TRANSFER_RESP, 1, (), cs_map=GenericIdMap((entry,)))
    assert decode(m.encode()) == m


def test_empty_map_keeps_its_cs_count() -> None:
    m = message(DataType.RESOLVE_INIT, 9, (), cs_map=EmptyMap(2))
    data = m.encode()
    assert data[8:10] == b"\x02\x01"
    assert decode(data) == m


def test_key_data_with_salt_and_interval() -> None:
    kd = KeyData(KeyType.TEK_SALT, b"\x01\x02", salt=b"\x03", kv=KvInterval(b"\x04", b"\x05\x06"))
    assert kd.encode_body() == bytes.fromhex("32 0002 0102 0001 03 01 04 02 0506")
    assert decode_key_data(encode_key_data((kd,))) == (kd,)


def test_key_data_list_chains_with_20_then_0() -> None:
    a = KeyData(KeyType.TGK, b"a", kv=KvSpi(b"\x01"))
    b = KeyData(KeyType.TEK, b"b")
    data = encode_key_data((a, b))
    assert data[0] == PayloadType.KEY_DATA
    assert data[len(a.encode_body()) + 1] == PayloadType.LAST
    assert decode_key_data(data) == (a, b)
    assert decode_key_data(b"") == ()


def test_signature_has_no_next_payload_and_ends_the_message() -> None:
    m = message(DataType.TRANSFER_INIT, 1, (samples.T, Signature(1, b"\x99" * 5)))
    data = m.encode()
    assert data.endswith(bytes.fromhex("1005") + b"\x99" * 5)
    assert data[10] == PayloadType.SIGN  # the Next payload of T, right after the HDR
    assert decode(data) == m
    with pytest.raises(MikeyError):
        message(DataType.TRANSFER_INIT, 1, (Signature(1, b""), samples.T))


# --- RFC 6043 §6 numbers and layouts, written out by hand ----------------------------------


def test_rfc_6043_type_numbers() -> None:
    # Table 6.1 (data types), Table 6.2 (next payload), Table 6.3/6.4/6.5/6.7/6.8/6.14
    assert [DataType[n] for n in ("REQUEST_INIT_PSK", "REQUEST_INIT_PK", "REQUEST_RESP")] == [
        11,
        12,
        13,
    ]
    assert [DataType.TRANSFER_INIT, DataType.TRANSFER_RESP] == [14, 15]
    assert [DataType.RESOLVE_INIT_PSK, DataType.RESOLVE_INIT_PK, DataType.RESOLVE_RESP] == [
        16,
        17,
        18,
    ]
    assert DataType.REQUEST_INIT is DataType.REQUEST_INIT_PSK
    assert DataType.RESOLVE_INIT is DataType.RESOLVE_INIT_PSK
    names = ("TR", "IDR", "RANDR", "TP", "TICKET")
    assert [PayloadType[n] for n in names] == [13, 14, 15, 16, 17]
    assert PrfFunc.PRF_HMAC_SHA_256 == 1 and EncrAlg.AES_CM_256 == 3
    assert [KeyType.GTGK, KeyType.GTGK_SALT, KeyType.MPK] == [4, 5, 6]
    assert TsType.NTP_UTC_32 == 3
    assert [ErrorNo.INVALID_TICKET, ErrorNo.INVALID_TPPAR] == [14, 15]
    assert [TsRole.TRI, TsRole.TRS, TsRole.TRE, TsRole.TRR] == [1, 2, 3, 4]
    assert [IdRole.IDRI, IdRole.IDRR, IdRole.IDRKMS, IdRole.IDRPSK, IdRole.IDRAPP] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert [RandRole.RANDRI, RandRole.RANDRR, RandRole.RANDRKMS] == [1, 2, 3]
    assert [TicketType.MIKEY_BASE, TicketType.TGPP_BASE] == [1, 2]


def test_ticket_policy_layout() -> None:
    """Ticket Type 16 | Subtype 8 | Version 8 | PRF Func 7 | D..O 12 | Res 5 | TP Data length
    16 | TP Data (a payload chain: first payload type, then each payload with its Next
    payload)."""
    kms = IdWithRole(IdRole.IDRKMS, IdType.URI, b"kms")
    policy = TicketPolicy.with_payloads(
        TicketType.MIKEY_BASE,
        (kms,),
        1,
        1,
        PrfFunc.PRF_HMAC_SHA_256,
        TicketFlag.D | TicketFlag.F | TicketFlag.I | TicketFlag.O,
    )
    # PRF 0000001, D=1 | E..L = 0 1 0 0 1 0 0 0 | M N O = 0 0 1, Res 00000
    assert policy.encode_body() == bytes.fromhex(
        "0001 01 01  03 48 20  0009  0e 00 03 01 0003 6b6d73"
    )
    assert policy.payloads() == (kms,)
    m = message(DataType.REQUEST_INIT_PSK, 0, (policy,))
    assert m.encode()[2] == 16  # the HDR's next payload: TP
    assert decode(m.encode()) == m


@pytest.mark.parametrize(
    ("flag", "word"),
    [
        (TicketFlag.D, 0x010000),
        (TicketFlag.E, 0x008000),
        (TicketFlag.F, 0x004000),
        (TicketFlag.G, 0x002000),
        (TicketFlag.H, 0x001000),
        (TicketFlag.I, 0x000800),
        (TicketFlag.J, 0x000400),
        (TicketFlag.K, 0x000200),
        (TicketFlag.L, 0x000100),
        (TicketFlag.M, 0x000080),
        (TicketFlag.N, 0x000040),
        (TicketFlag.O, 0x000020),
    ],
    ids=lambda v: v.name if isinstance(v, TicketFlag) else hex(v),
)
def test_each_flag_bit_on_the_wire(flag: TicketFlag, word: int) -> None:
    """The 24 bits after Version: PRF func (bits 0-6), D (7) ... O (18), Res (19-23)."""
    body = TicketPolicy(TicketType.TGPP_BASE, flags=flag).encode_body()
    assert body[4:7] == word.to_bytes(3, "big")
    assert TicketPolicy.parse(Reader(body)).has(flag)


def test_ticket_payload_layout() -> None:
    """TICKET = the TP fields | Ticket Data length 16 | Ticket Data | Initiator Data length 16
    | Initiator Data (here Vi, Vr with the NULL MAC: 09 | 09 00 | 00 00)."""
    policy = TicketPolicy(TicketType.MIKEY_BASE, 2, 3, PrfFunc.PRF_HMAC_SHA_256, TicketFlag.I)
    assert policy.encode_body() == bytes.fromhex("0001 02 03 02 08 00 0000")
    ticket = Ticket(policy, b"xyz")
    assert ticket.encode_body() == bytes.fromhex("0001 02 03 02 08 00 0000 0003 78797a 0000")
    vi_vr = encode_payload_chain((Verification(MacAlg.NULL), Verification(MacAlg.NULL)))
    assert vi_vr == bytes.fromhex("09 09 00 00 00")
    forked = Ticket(policy, b"xyz", vi_vr)
    assert forked.encode_body().endswith(bytes.fromhex("0003 78797a 0005 0909000000"))
    assert forked.initiator_payloads() == (Verification(MacAlg.NULL),) * 2
    assert forked.initiator_data_len == 7
    m = message(DataType.TRANSFER_INIT, 0, (forked,))
    assert decode(m.encode()) == m


def test_ntp_utc_32_timestamp_is_four_bytes() -> None:
    tr = TimestampWithRole(TsRole.TRE, TsType.NTP_UTC_32, 0xE9A1B2C3)
    assert tr.encode_body() == bytes.fromhex("03 03 e9a1b2c3")


def test_ticket_flags_of_the_spec_text() -> None:
    p = TicketPolicy(TicketType.TGPP_2, flags=TicketFlag.H | TicketFlag.I)
    assert p.has(TicketFlag.H) and p.has(TicketFlag.I)
    assert not p.has(TicketFlag.F) and not p.has(TicketFlag.G)


def test_ntp_timestamp_of_a_unix_time() -> None:
    assert ntp_from_unix(0) == 2_208_988_800 << 32
    assert ntp_from_unix(1.5) == ((2_208_988_801 << 32) | (1 << 31))
    assert Timestamp.ntp_utc(0).value >> 32 == 2_208_988_800


# --- round trips ------------------------------------------------------------------------------

ONE_OF_EACH: list[Payload] = [
    Kemac.plain((KeyData(KeyType.TGK_SALT, b"k" * 16, salt=b"s" * 14),)),
    Kemac(EncrAlg.AES_KW_128, b"\x01" * 24, MacAlg.HMAC_SHA_256_256, b"\x02" * 32),
    Kemac(EncrAlg.AES_CM_128, b"", MacAlg.NULL),
    Timestamp(TsType.NTP_UTC, 1),
    Timestamp(TsType.NTP, (1 << 64) - 1),
    Timestamp(TsType.COUNTER, 5),
    TimestampWithRole(1, TsType.COUNTER, 9),
    Id(IdType.NAI, b"alice@example.net"),
    IdWithRole(IdRole.IDRAPP, IdType.BYTE_STRING, b"\x00"),
    Cert(0, b"\x30\x00"),
    Verification(MacAlg.HMAC_SHA_1_160, b"\x05" * 20),
    SecurityPolicy(7, 0, (SpParam(0, b""), SpParam(255, b"\xff" * 255))),
    Rand(b""),
    RandWithRole(3, b"\x07" * 32),
    Err(ErrorNo.INVALID_TPPAR),
    GeneralExtension(2, b"key-id"),
    TicketPolicy(0xFFFF, 255, 255, PrfFunc.MIKEY_1, 0xFFF),
    Ticket(TicketPolicy(TicketType.TGPP_3), b""),
    Timestamp(TsType.NTP_UTC_32, 0xFFFFFFFF),
]


@pytest.mark.parametrize("payload", ONE_OF_EACH, ids=lambda p: type(p).__name__)
def test_every_payload_round_trips(payload: Payload) -> None:
    m = message(DataType.PSK_INIT, 0, (payload, samples.RAND))
    data = m.encode()
    assert decode(data) == m
    assert decode(data).encode() == data


def test_every_payload_class_is_covered() -> None:
    from mikey.payloads import PARSERS

    covered = {type(p).TYPE for p in ONE_OF_EACH} | {PayloadType.SIGN}
    assert covered == set(PARSERS)


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_every_message_type_round_trips(name: str) -> None:
    m = samples.ALL[name]()
    data = m.encode()
    assert decode(data) == m
    assert decode(data).encode() == data
    check_composition(m)


def test_the_samples_cover_every_modelled_message_type() -> None:
    types = {f().data_type for f in samples.ALL.values()}
    assert types == {
        DataType.PSK_INIT,
        DataType.PSK_VERIFY,
        DataType.ERROR,
        DataType.REQUEST_INIT_PSK,
        DataType.REQUEST_RESP,
        DataType.TRANSFER_INIT,
        DataType.TRANSFER_RESP,
        DataType.RESOLVE_INIT_PSK,
        DataType.RESOLVE_RESP,
    }


def test_kemac_key_data_of_the_sample() -> None:
    (kemac,) = samples.request_resp().find(Kemac)
    assert isinstance(kemac, Kemac)
    mpki, mpkr, tgk, tek = kemac.key_data()
    assert mpki.key_type is KeyType.MPK and mpkr.key_type is KeyType.MPK
    assert tgk.key == samples.TGK and tgk.kv == KvSpi(samples.SPI)
    assert tek.key_type is KeyType.TEK_SALT and tek.salt == bytes(14)


def test_encrypted_kemac_hands_out_no_key_data() -> None:
    kemac = Kemac(EncrAlg.AES_KW_128, b"\x00" * 24, MacAlg.NULL)
    with pytest.raises(MikeyError) as e:
        kemac.key_data()
    assert e.value.code == ErrorNo.INVALID_EA


def test_mac_input_and_trailer() -> None:
    m = samples.transfer_init()
    data = m.encode()
    assert m.mac_input() == data[:-32]
    signed = m.with_trailer(b"\x5a" * 32)
    assert signed.encode() == data[:-32] + b"\x5a" * 32
    assert signed.mac_input() == m.mac_input()
    psk = samples.psk_init()
    assert psk.mac_input() == psk.encode()[:-20]
    with pytest.raises(MikeyError):
        samples.error().mac_input()
    with pytest.raises(MikeyError):
        m.with_trailer(b"short")


# --- composition ------------------------------------------------------------------------------


def test_composition_rules() -> None:
    m = samples.transfer_init()
    no_ticket = attrs.evolve(m, payloads=tuple(p for p in m.payloads if not isinstance(p, Ticket)))
    with pytest.raises(MikeyError, match="Ticket"):
        check_composition(no_ticket)
    unsigned = attrs.evolve(m, payloads=m.payloads[:-1])
    with pytest.raises(MikeyError, match="end with"):
        check_composition(unsigned)
    two_t = attrs.evolve(m, payloads=(samples.T, *m.payloads))
    with pytest.raises(MikeyError) as e:
        check_composition(two_t)
    assert e.value.code == ErrorNo.INVALID_TS
    check_composition(message(DataType.DH_INIT, 0, ()))  # no rule: passes


@pytest.mark.parametrize(
    ("build", "role"),
    [
        (samples.request_init, RandRole.RANDRR),
        (samples.transfer_init, RandRole.RANDRR),
        (samples.resolve_init, RandRole.RANDRI),
    ],
)
def test_initial_ticket_messages_need_their_randr(
    build: Callable[[], Message], role: RandRole
) -> None:
    """RANDRi in REQUEST_INIT and TRANSFER_INIT, RANDRr in RESOLVE_INIT (RFC 6043 §4.2)."""
    m = build()
    wrong = tuple(
        RandWithRole(role, p.rand) if isinstance(p, RandWithRole) else p for p in m.payloads
    )
    with pytest.raises(MikeyError, match="RANDR"):
        check_composition(attrs.evolve(m, payloads=wrong))


def test_ticket_messages_end_with_v_and_resp_carry_kemac() -> None:
    m = samples.request_resp()
    no_kemac = attrs.evolve(m, payloads=tuple(p for p in m.payloads if not isinstance(p, Kemac)))
    with pytest.raises(MikeyError, match="Kemac"):
        check_composition(no_kemac)
    signed = attrs.evolve(m, payloads=(*m.payloads[:-1], Signature(0, b"")))
    with pytest.raises(MikeyError, match="end with Verification"):
        check_composition(signed)


# --- bad input --------------------------------------------------------------------------------


def _code(data: bytes) -> int:
    with pytest.raises(MikeyError) as e:
        decode(data)
    return e.value.code


GOOD = samples.psk_init().encode()


def test_every_truncation_raises_mikey_error() -> None:
    for name, build in samples.ALL.items():
        data = build().encode()
        for n in range(len(data)):
            with pytest.raises(MikeyError):
                decode(data[:n])
        with pytest.raises(MikeyError, match="after the last payload"):
            decode(data + b"\x00")
        assert decode(data).encode() == data, name


def test_error_numbers_say_what_was_wrong() -> None:
    assert _code(b"\x02" + GOOD[1:]) == ErrorNo.UNSPECIFIED  # version 2
    assert _code(GOOD[:1] + b"\x63" + GOOD[2:]) == ErrorNo.INVALID_DT
    assert _code(GOOD[:3] + b"\x85" + GOOD[4:]) == ErrorNo.INVALID_PRF
    assert _code(GOOD[:9] + b"\x07" + GOOD[10:]) == ErrorNo.UNSPECIFIED  # CS ID map type
    t_at = 10 + 2 * 9  # T payload after HDR + two SRTP-ID entries
    assert _code(GOOD[: t_at + 1] + b"\x09" + GOOD[t_at + 2 :]) == ErrorNo.INVALID_TS
    kemac_at = len(GOOD) - 20 - 1 - 25 - 3 - 1
    assert GOOD[kemac_at + 1] == EncrAlg.NULL
    bad_ea = GOOD[: kemac_at + 1] + b"\x09" + GOOD[kemac_at + 2 :]
    assert _code(bad_ea) == ErrorNo.INVALID_EA
    bad_mac = GOOD[:-21] + b"\x07" + GOOD[-20:]
    assert _code(bad_mac) == ErrorNo.INVALID_MAC
    unknown_payload = GOOD[:2] + b"\x63" + GOOD[3:]
    assert _code(unknown_payload) == ErrorNo.UNSPECIFIED


def test_reserved_fields_must_be_zero() -> None:
    err = samples.error().encode()
    at = 10 + 10 + 1  # HDR, T (NTP-UTC), the first ERR's Next payload
    assert err[at] == ErrorNo.AUTH_FAILURE
    with pytest.raises(MikeyError, match="reserved"):
        decode(err[: at + 1] + b"\x00\x01" + err[at + 3 :])
    tp = message(DataType.REQUEST_INIT, 0, (TicketPolicy(1),)).encode()
    res_at = 10 + 1 + 6  # HDR, TP's next payload, type/subtype/version/PRF+D/E..L
    assert tp[res_at] == 0  # M N O Res
    for bit in (0x01, 0x10):  # reserved bits
        with pytest.raises(MikeyError) as e:
            decode(tp[:res_at] + bytes([bit]) + tp[res_at + 1 :])
        assert e.value.code == ErrorNo.INVALID_TPPAR
    prf_at = res_at - 2
    with pytest.raises(MikeyError) as e:
        decode(tp[:prf_at] + b"\x0e" + tp[prf_at + 1 :])  # PRF func 7
    assert e.value.code == ErrorNo.INVALID_PRF


def test_bad_payload_chains_inside_tp_data_and_initiator_data() -> None:
    with pytest.raises(MikeyError) as e:
        TicketPolicy(1, data=b"\x05\x00")  # a T payload cut short
    assert e.value.code == ErrorNo.INVALID_TPPAR
    with pytest.raises(MikeyError) as e:
        Ticket(TicketPolicy(1), b"", b"\x09\x00\x00\xff")  # a byte after the last payload
    assert e.value.code == ErrorNo.INVALID_TICKET
    data = message(DataType.RESOLVE_INIT, 0, (Ticket(TicketPolicy(1), b"d", b"\x09\x00\x00"),))
    wire = data.encode()
    with pytest.raises(MikeyError) as e:
        decode(wire[:-1] + b"\x01")  # Vr now HMAC-SHA-1: its 20-byte MAC is missing
    assert e.value.code == ErrorNo.INVALID_TICKET


def test_key_data_inside_a_null_kemac_is_checked() -> None:
    with pytest.raises(MikeyError):
        Kemac(EncrAlg.NULL, b"\x00\xf0\x00\x00", MacAlg.NULL)  # key type 15
    with pytest.raises(MikeyError):
        decode_key_data(b"\x05\x00\x00\x00")  # chained to a T payload
    with pytest.raises(MikeyError):
        decode_key_data(b"\x00\x00\x00\x00\xff")  # trailing byte


@pytest.mark.parametrize(
    "build",
    [
        lambda: Verification(MacAlg.HMAC_SHA_1_160, b"\x00" * 19),
        lambda: Kemac(EncrAlg.NULL, b"", MacAlg.HMAC_SHA_256_256, b"\x00" * 20),
        lambda: KeyData(KeyType.TGK, b"k", salt=b"s"),
        lambda: KeyData(KeyType.TEK_SALT, b"k"),
        lambda: KeyData(99, b"k"),
        lambda: Timestamp(TsType.COUNTER, 1 << 32),
        lambda: Timestamp(7, 0),
        lambda: Rand(b"\x00" * 256),
        lambda: Id(256, b""),
        lambda: Err(-1),
        lambda: SpParam(0, b"\x00" * 256),
        lambda: Signature(16, b""),
        lambda: GenericIdEntry(0, 0, policies=tuple(range(128))),
        lambda: Header(99, 0),
        lambda: Header(DataType.PSK_INIT, 1 << 32),
        lambda: TicketPolicy(1 << 16),
        lambda: TicketPolicy(1, flags=1 << 12),
        lambda: Message(Header(DataType.PSK_INIT, 0), ("not a payload",)),  # type: ignore[arg-type]
    ],
)
def test_values_that_cannot_be_encoded_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(MikeyError):
        build()


def test_mikey_error_carries_code_reason_offset() -> None:
    with pytest.raises(MikeyError) as e:
        decode(GOOD[:5])
    assert e.value.code == ErrorNo.UNSPECIFIED
    assert e.value.offset == 4
    assert "CSB ID" in e.value.reason
    assert "UNSPECIFIED" in str(e.value)
    assert Err(e.value.code).error_no == 12


def test_non_bytes_input() -> None:
    with pytest.raises(MikeyError):
        decode("01000500")  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
blob8 = st.binary(max_size=40)
blob16 = st.binary(max_size=300)


def _mac(alg: MacAlg) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=MAC_LENGTH[alg], max_size=MAC_LENGTH[alg])


kv = st.one_of(st.none(), st.builds(KvSpi, blob8), st.builds(KvInterval, blob8, blob8))


@st.composite
def key_data(draw: st.DrawFn) -> KeyData:
    key_type = draw(st.sampled_from(KeyType))
    salted = key_type in (KeyType.TGK_SALT, KeyType.TEK_SALT, KeyType.GTGK_SALT)
    return KeyData(key_type, draw(blob16), draw(blob16) if salted else None, draw(kv))


@st.composite
def kemac(draw: st.DrawFn) -> Kemac:
    mac_alg = draw(st.sampled_from(MacAlg))
    encr_alg = draw(st.sampled_from(EncrAlg))
    if encr_alg is EncrAlg.NULL:
        data = encode_key_data(draw(st.lists(key_data(), max_size=3)))
    else:
        data = draw(blob16)
    return Kemac(encr_alg, data, mac_alg, draw(_mac(mac_alg)))


@st.composite
def verification(draw: st.DrawFn) -> Verification:
    alg = draw(st.sampled_from(MacAlg))
    return Verification(alg, draw(_mac(alg)))


@st.composite
def timestamp(draw: st.DrawFn) -> Timestamp:
    ts_type = draw(st.sampled_from(TsType))
    bits = 32 if ts_type in (TsType.COUNTER, TsType.NTP_UTC_32) else 64
    return Timestamp(ts_type, draw(st.integers(0, (1 << bits) - 1)))


@st.composite
def timestamp_role(draw: st.DrawFn) -> TimestampWithRole:
    t = draw(timestamp())
    return TimestampWithRole(draw(u8), t.ts_type, t.value)


#: TP Data / Initiator Data: empty, or a chain of a few simple payloads.
inner_chain = st.lists(
    st.one_of(st.builds(Rand, blob8), st.builds(IdWithRole, u8, u8, blob16), verification()),
    max_size=3,
).map(encode_payload_chain)

policy = st.builds(
    TicketPolicy,
    st.integers(0, 0xFFFF),
    u8,
    u8,
    st.sampled_from(PrfFunc),
    st.integers(0, 0xFFF),
    inner_chain,
)

payload: st.SearchStrategy[Payload] = st.one_of(
    kemac(),
    timestamp(),
    timestamp_role(),
    st.builds(Id, u8, blob16),
    st.builds(IdWithRole, u8, u8, blob16),
    st.builds(Cert, u8, blob16),
    verification(),
    st.builds(
        SecurityPolicy, u8, u8, st.lists(st.builds(SpParam, u8, blob8), max_size=5).map(tuple)
    ),
    st.builds(Rand, blob8),
    st.builds(RandWithRole, u8, blob8),
    st.builds(Err, u8),
    st.builds(GeneralExtension, u8, blob16),
    policy,
    st.builds(Ticket, policy, blob16, inner_chain),
)

cs_map = st.one_of(
    st.builds(
        SrtpIdMap,
        st.lists(
            st.builds(SrtpIdEntry, u8, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
            max_size=4,
        ).map(tuple),
    ),
    st.builds(EmptyMap, u8),
    st.builds(
        GenericIdMap,
        st.lists(
            st.builds(
                GenericIdEntry,
                u8,
                u8,
                st.booleans(),
                st.lists(u8, max_size=4).map(tuple),
                blob8,
                blob8,
            ),
            max_size=3,
        ).map(tuple),
    ),
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    header = Header(
        draw(st.sampled_from(DataType)),
        draw(st.integers(0, 2**32 - 1)),
        draw(cs_map),
        draw(st.booleans()),
        draw(st.sampled_from(PrfFunc)),
    )
    body = draw(st.lists(payload, max_size=6))
    if draw(st.booleans()):
        body.append(Signature(draw(st.integers(0, 15)), draw(blob16)))
    return Message(header, tuple(body))


@given(messages())
def test_random_messages_round_trip(m: Message) -> None:
    data = m.encode()
    assert decode(data) == m
    assert decode(data).encode() == data


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_mikey_error(data: bytes) -> None:
    try:
        m = decode(data)
    except MikeyError:
        return
    assert m.encode() == data


@given(messages(), st.data())
def test_damaged_messages_raise_only_mikey_error(m: Message, data: st.DataObject) -> None:
    raw = bytearray(m.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(u8)
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut]), bytes(raw) + data.draw(st.binary(max_size=8))):
        try:
            decoded = decode(candidate)
        except MikeyError:
            continue
        assert decoded.encode() == candidate


@given(st.lists(key_data(), max_size=4))
def test_key_data_lists_round_trip(items: list[KeyData]) -> None:
    data = encode_key_data(items)
    assert decode_key_data(data) == tuple(items)
    assert encode_key_data(decode_key_data(data)) == data


HEADERS = [f().encode()[: len(f().header.encode(0))] for f in samples.ALL.values()]


@given(st.sampled_from(HEADERS), st.sampled_from(list(PayloadType)), st.binary(max_size=300))
def test_random_payload_bytes_raise_only_mikey_error(
    header: bytes, first: PayloadType, body: bytes
) -> None:
    """A valid HDR naming any first payload, then random bytes: the payload parsers see them."""
    data = header[:2] + bytes([first]) + header[3:] + body
    try:
        m = decode(data)
    except MikeyError:
        return
    assert m.encode() == data


@given(st.binary(max_size=200))
def test_random_key_data_bytes_raise_only_mikey_error(data: bytes) -> None:
    try:
        items = decode_key_data(data)
    except MikeyError:
        return
    assert encode_key_data(items) == data
