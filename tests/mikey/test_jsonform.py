"""The JSON form of a MIKEY message: lossless for every sample and every message the codec's
strategies build, readable (names, hex, ISO times), derived from the attrs fields, and every
bad document refused with the JSON path of the mistake."""

from __future__ import annotations

import copy
import datetime
import enum
import json
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given

from mikey import decode, encode, jsonform, samples
from mikey.constants import DataType, EncrAlg, ErrorNo, KeyType, MacAlg, TsType
from mikey.jsonform import JsonFormError, from_json, to_json
from mikey.message import Message, message
from mikey.payloads import (
    NTP_UNIX_OFFSET,
    Err,
    IdWithRole,
    Kemac,
    KeyData,
    TicketPolicy,
    Timestamp,
)
from tests.mikey.test_message import messages


def _through_text(m: Message) -> Message:
    return from_json(json.loads(json.dumps(to_json(m))))


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_every_sample_round_trips(name: str) -> None:
    m = samples.ALL[name]()
    back = _through_text(m)
    assert back == m
    assert encode(back) == encode(m)


@given(messages())
def test_random_messages_round_trip(m: Message) -> None:
    assert _through_text(m) == m


def _with_tls_map(m: Message) -> Message:
    """The sample with the GENERIC-ID map of the Ticket Transfer samples, so that one document
    shows every part of the form (a REQUEST_RESP itself carries the Empty map, RFC 6043
    §4.2.1.5)."""
    return attrs.evolve(m, header=attrs.evolve(m.header, cs_map=samples.TLS_MAP))


def test_the_form_is_readable() -> None:
    form = to_json(_with_tls_map(samples.request_resp()))
    header = form["header"]
    assert header["data_type"] == "REQUEST_RESP"
    assert header["prf_func"] == "PRF_HMAC_SHA_256"
    assert header["cs_map"]["map_type"] == "GENERIC_ID"
    assert header["cs_map"]["entries"][0]["spi"] == "00000001"
    assert [p["payload"] for p in form["payloads"]] == ["T", "IDR", "TICKET", "KEMAC", "V"]
    t, idr, ticket, kemac, v = form["payloads"]
    seconds = (samples.T.value >> 32) - NTP_UNIX_OFFSET
    expected = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert t == {"payload": "T", "ts_type": "NTP_UTC", "value": samples.T.value, "utc": expected}
    assert idr["role"] == "IDRKMS" and idr["id_type"] == "URI"
    assert idr["data"] == b"https://kms.ims.example.net".hex()
    assert idr["data_text"] == "https://kms.ims.example.net"
    assert ticket["policy"]["ticket_type"] == "TGPP_2"
    assert ticket["policy"]["flags"] == ["D", "E", "F", "H", "I", "N", "O"]
    assert kemac["encr_alg"] == "NULL" and "encr_data" not in kemac
    assert [k["key_type"] for k in kemac["key_data"]] == ["MPK", "MPK", "TGK", "TEK_SALT"]
    assert kemac["key_data"][2] == {
        "key_type": "TGK",
        "key": samples.TGK.hex(),
        "salt": None,
        "kv": {"type": "KvSpi", "spi": "00000001"},
    }
    assert kemac["key_data"][3]["kv"] == {
        "type": "KvInterval",
        "valid_from": "00",
        "valid_to": "ff",
    }
    assert v == {"payload": "V", "auth_alg": "HMAC_SHA_256_256", "ver_data": "00" * 32}


def test_unregistered_numbers_stay_numbers() -> None:
    m = message(
        DataType.REQUEST_INIT,
        1,
        (
            IdWithRole(99, 77, b"\x00\xff"),
            Err(200),
            TicketPolicy(0x1234),
            Timestamp(TsType.COUNTER, 5),
        ),
    )
    idr, err, tp, ts = to_json(m)["payloads"]
    assert (idr["role"], idr["id_type"], "data_text" in idr) == (99, 77, False)
    assert err["error_no"] == 200
    assert tp["ticket_type"] == 0x1234
    assert "utc" not in ts
    assert _through_text(m) == m


def test_an_encrypted_kemac_keeps_its_ciphertext() -> None:
    kemac = Kemac(EncrAlg.AES_KW_128, b"\x01" * 24, MacAlg.NULL)
    form = to_json(message(DataType.PSK_INIT, 1, (kemac,)))["payloads"][0]
    assert form["encr_alg"] == "AES_KW_128"
    assert form["encr_data"] == "01" * 24 and "key_data" not in form


def _request() -> dict[str, Any]:
    return to_json(_with_tls_map(samples.request_resp()))


def test_names_or_numbers_and_companions_alone_are_accepted() -> None:
    doc = _request()
    doc["header"]["data_type"] = 13  # REQUEST_RESP, RFC 6043 Table 6.1
    doc["payloads"][1]["role"] = 3
    del doc["payloads"][0]["value"]  # utc alone gives the value
    del doc["payloads"][1]["data"]  # data_text alone gives the bytes
    doc["header"]["cs_map"]["entries"][0]["prot_type"] = 240
    assert from_json(doc) == _with_tls_map(samples.request_resp())
    doc = _request()
    doc["payloads"][0]["utc"] = "2024-03-17T19:19:47+01:00"  # the same instant
    assert from_json(doc) == _with_tls_map(samples.request_resp())
    del doc["payloads"][0]["utc"]  # a read-only companion may be left out
    del doc["payloads"][1]["data_text"]
    assert from_json(doc) == _with_tls_map(samples.request_resp())


def test_utc_with_a_fraction() -> None:
    value = (3_900_000_000 << 32) | (1 << 31)
    t = Timestamp(TsType.NTP, value)
    form = to_json(message(DataType.PSK_VERIFY, 1, (t,)))["payloads"][0]
    assert form["utc"].endswith(".500000Z")
    del form["value"]
    assert from_json({"header": {"data_type": 1, "csb_id": 1}, "payloads": [form]}).payloads == (t,)


def test_optional_fields_take_their_defaults() -> None:
    doc = {
        "header": {"data_type": "PSK_VERIFY", "csb_id": 7},
        "payloads": [{"payload": "T", "ts_type": "COUNTER", "value": 3}],
    }
    m = from_json(doc)
    assert m == message(DataType.PSK_VERIFY, 7, (Timestamp(TsType.COUNTER, 3),))
    assert decode(encode(m)) == m


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target: Any = doc
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return change


KEMAC = ("payloads", 3)

BAD: list[tuple[Callable[[dict[str, Any]], None], str, str]] = [
    (
        _set((*KEMAC, "key_data", 0, "kv"), {"type": "KvNope"}),
        "payloads[3].key_data[0].kv.type",
        "KvSpi",
    ),
    (
        _set((*KEMAC, "key_data", 0, "kv"), {"type": "KvSpi"}),
        "payloads[3].key_data[0].kv.spi",
        "missing",
    ),
    (_set((*KEMAC, "key_data", 0, "kv"), "00"), "payloads[3].key_data[0].kv", "object"),
    (_set((*KEMAC, "key_data", 0, "key"), "0g"), "payloads[3].key_data[0].key", "hex"),
    (_set((*KEMAC, "key_data", 0, "key"), "abc"), "payloads[3].key_data[0].key", "hex"),
    (_set((*KEMAC, "key_data", 0, "key_type"), "TEK_SALT"), "payloads[3].key_data[0]", "salt"),
    (_set((*KEMAC, "encr_data"), ""), "payloads[3].key_data", "not both"),
    (_set((*KEMAC, "encr_alg"), "AES_KW_128"), "payloads[3].key_data", "ciphertext"),
    (_set((*KEMAC, "mac_alg"), "HMAC_SHA_1_160"), "payloads[3]", "MAC"),
    (_set(("payloads", 0, "payload"), "NOPE"), "payloads[0].payload", "KEMAC"),
    (_delete(("payloads", 0, "payload")), "payloads[0].payload", "missing"),
    (_set(("payloads", 0, "extra"), 1), "payloads[0].extra", "unknown member"),
    (_set(("payloads", 0, "utc"), "2024-03-17T18:19:48Z"), "payloads[0].utc", "give one"),
    (_set(("payloads", 0, "utc"), "2024-03-17T18:19:47"), "payloads[0].utc", "time zone"),
    (_set(("payloads", 0, "utc"), "yesterday"), "payloads[0].utc", "ISO 8601"),
    (_set(("payloads", 0, "utc"), "2040-01-01T00:00:00Z"), "payloads[0].utc", "era 0"),
    (_set(("payloads", 0, "value"), -1), "payloads[0]", "unsigned"),
    (_set(("payloads", 0, "value"), 1 << 64), "payloads[0]", "unsigned"),
    (_set(("payloads", 0, "value"), "1"), "payloads[0].value", "integer"),
    (_set(("payloads", 1, "data_text"), "sip:mallory"), "payloads[1].data_text", "give one"),
    (_set(("payloads", 1, "role"), "IDRNOPE"), "payloads[1].role", "IDRKMS"),
    (
        _set(("payloads", 2, "policy", "flags"), ["F", "Z"]),
        "payloads[2].policy.flags[1]",
        "TicketFlag",
    ),
    (_set(("payloads", 2, "policy", "flags"), "Z"), "payloads[2].policy.flags", "TicketFlag"),
    (_set(("payloads", 4, "auth_alg"), "HMAC_MD5"), "payloads[4].auth_alg", "HMAC_SHA_256_256"),
    (_set(("header", "data_type"), "REQUEST"), "header.data_type", "REQUEST_INIT"),
    (_set(("header", "data_type"), 99), "header.data_type", "DataType"),
    (_set(("header", "v"), 1), "header.v", "true or false"),
    (_set(("header", "csb_id"), True), "header.csb_id", "integer"),
    (_set(("header", "csb_id"), 1 << 32), "header", "32-bit"),
    (_delete(("header", "csb_id")), "header.csb_id", "missing"),
    (_set(("header", "cs_map", "map_type"), "SRTP"), "header.cs_map.map_type", "GENERIC_ID"),
    (_set(("header", "cs_map", "entries"), {}), "header.cs_map.entries", "list"),
    (_set(("header", "cs_map"), None), "header.cs_map", "null"),
    (_set(("payloads",), None), "payloads", "list"),
    (_delete(("header",)), "header", "missing"),
]


@pytest.mark.parametrize(("change", "path", "words"), BAD)
def test_bad_documents_name_the_path(
    change: Callable[[dict[str, Any]], None], path: str, words: str
) -> None:
    doc = copy.deepcopy(_request())
    change(doc)
    with pytest.raises(JsonFormError) as caught:
        from_json(doc)
    assert caught.value.path == path
    assert words in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


def test_a_refused_value_carries_the_mikey_error_number() -> None:
    doc = _request()
    doc["payloads"][4]["ver_data"] = "00"
    with pytest.raises(JsonFormError) as caught:
        from_json(doc)
    assert caught.value.code == ErrorNo.INVALID_MAC
    assert caught.value.path == "payloads[4]"
    with pytest.raises(JsonFormError) as caught:
        from_json([])  # type: ignore[arg-type]
    assert caught.value.path == ""


# --- the form follows the attrs fields ------------------------------------------------------


class Colour(enum.IntEnum):
    RED = 1
    GREEN = 2


@attrs.frozen
class Inner:
    blob: bytes


@attrs.frozen
class Grown:
    """A class with fields no payload has yet: the form is derived, not written per class."""

    colour: Colour
    counts: tuple[int, ...]
    maybe: bytes | None
    inner: Inner
    label: str = "x"
    flag: bool = False


def test_new_fields_get_a_form_without_new_code() -> None:
    value = Grown(Colour.GREEN, (1, 2), None, Inner(b"\xab"), "y", True)
    form = jsonform._dump_object(Grown, value)
    assert form == {
        "colour": "GREEN",
        "counts": [1, 2],
        "maybe": None,
        "inner": {"blob": "ab"},
        "label": "y",
        "flag": True,
    }
    assert jsonform._load_object(Grown, json.loads(json.dumps(form)), "") == value
    del form["label"], form["flag"]
    assert jsonform._load_object(Grown, form, "") == Grown(
        Colour.GREEN, (1, 2), None, Inner(b"\xab")
    )
    form["inner"] = {"blob": 5}
    with pytest.raises(JsonFormError, match=r"^x\.inner\.blob: expected hex"):
        jsonform._load_object(Grown, form, "x")


def test_a_key_data_list_built_by_hand() -> None:
    doc = {
        "header": {"data_type": "PSK_INIT", "csb_id": 1},
        "payloads": [
            {
                "payload": "KEMAC",
                "encr_alg": "NULL",
                "key_data": [
                    {"key_type": "TEK_SALT", "key": "11" * 16, "salt": "22" * 14},
                    {"key_type": "TGK", "key": "33" * 16, "kv": {"type": "KvSpi", "spi": "01"}},
                ],
                "mac_alg": "NULL",
            }
        ],
    }
    kemac = from_json(doc).payloads[0]
    assert isinstance(kemac, Kemac)
    assert [k.key_type for k in kemac.key_data()] == [KeyType.TEK_SALT, KeyType.TGK]
    assert kemac.key_data()[0] == KeyData(KeyType.TEK_SALT, b"\x11" * 16, b"\x22" * 14)
