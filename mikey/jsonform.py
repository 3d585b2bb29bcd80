"""A MIKEY message as JSON, and back: :func:`to_json` and :func:`from_json`.

The form is lossless (``from_json(to_json(m)) == m`` for every message) and written for people
to read and edit. It is derived from the attrs fields and type annotations of the message and
payload classes, so a field added to a payload class appears in the JSON without a change here.
The rules:

- an attrs value is an object with one member per field, in field order;
- a field that holds one of several classes (the payloads of a message, the CS ID map, a key's
  validity) names the class in a tag member: ``"payload"`` with the Next payload name for a
  payload (``"KEMAC"``, ``"T"``, ``"IDR"``), ``"map_type"`` with the map type name for a CS ID
  map (``"GENERIC_ID"``), else ``"type"`` with the class name (``"KvSpi"``);
- an enum field is its member name (``"REQUEST_INIT"``, ``"AES_KW_128"``); the plain-int
  fields that have registered names (an IDR role, an error number, a ticket type, ...) are
  the name when the number is registered and the number otherwise, and the ticket flags are a
  list of flag names (a number when some bit has no name); input takes names or numbers;
- bytes are lowercase hex, a tuple is a list, ``None`` is ``null``;
- a NULL-encrypted KEMAC shows its key data sub-payloads as ``"key_data"`` (a list) instead of
  the Encr data bytes; an encrypted one keeps ``"encr_data"`` (the ciphertext).

Two read-only companions make values readable; the decoder uses the field when both are
given and then requires the companion to agree with it, or builds the field from the
companion alone:

- ``"utc"`` next to the ``value`` of an NTP-UTC or NTP timestamp (T, TR): ISO 8601 UTC, e.g.
  ``"2024-03-17T13:46:43Z"`` (NTP era 0; the fraction to the microsecond);
- ``"data_text"`` next to a ``data`` bytes field (ID, IDR, CERT, GEN EXT, TICKET) whose bytes
  are all printable ASCII.

Everything the decoder cannot take (an unknown member or name, bad hex, a missing field, a
value the payload class refuses) raises :class:`JsonFormError`, whose ``path`` names where,
e.g. ``payloads[2].key_data[0].kv``.
"""

from __future__ import annotations

import datetime
import enum
import functools
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

from mikey.constants import (
    EncrAlg,
    ErrorNo,
    GenExtType,
    IdRole,
    IdType,
    ProtType,
    RandRole,
    TicketType,
    TsRole,
    TsType,
)
from mikey.errors import MikeyError
from mikey.message import Message
from mikey.payloads import KeyData, TicketFlag, decode_key_data, encode_key_data

__all__ = ["JsonFormError", "from_json", "to_json"]


class JsonFormError(ValueError):
    """JSON that is not a MIKEY message: ``path`` says where (``""`` for the whole document),
    ``reason`` what is wrong, ``code`` the MIKEY error number when a payload class refused a
    value (else None)."""

    def __init__(self, path: str, reason: str, code: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.code = code
        super().__init__(f"{path or 'the document'}: {reason}")


#: Plain-int fields with registered names, by (class name, field name).
NAMED_INTS: dict[tuple[str, str], type[enum.Enum]] = {
    ("Id", "id_type"): IdType,
    ("IdWithRole", "role"): IdRole,
    ("IdWithRole", "id_type"): IdType,
    ("TimestampWithRole", "role"): TsRole,
    ("RandWithRole", "role"): RandRole,
    ("Err", "error_no"): ErrorNo,
    ("GeneralExtension", "ext_type"): GenExtType,
    ("TicketPolicy", "ticket_type"): TicketType,
    ("TicketPolicy", "flags"): TicketFlag,
    ("SecurityPolicy", "prot_type"): ProtType,
    ("GenericIdEntry", "prot_type"): ProtType,
}

#: Tag member of a union, by the name of the members' enum class attribute.
TAG_NAMES = {"TYPE": "payload", "MAP_TYPE": "map_type"}
#: Tag member of a union whose members have no such attribute (the value is the class name).
CLASS_TAG = "type"

_NTP_EPOCH = datetime.datetime(1900, 1, 1, tzinfo=datetime.UTC)
_NTP_TS = (TsType.NTP_UTC, TsType.NTP)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def to_json(message: Message) -> dict[str, Any]:
    """``message`` as a JSON-ready dict (str keys; str, int, bool, None, list, dict values)."""
    return _dump_object(type(message), message)


def from_json(data: Mapping[str, Any]) -> Message:
    """The message that ``data`` (as :func:`to_json` makes it, or hand-written) describes."""
    result = _load_object(Message, data, "")
    assert isinstance(result, Message)
    return result


# --- what the annotations say ---------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _init_fields(cls: type) -> list[attrs.Attribute[Any]]:
    return [f for f in attrs.fields(cls) if f.init]


def _tag(cls: type) -> tuple[str, str]:
    """The tag member and value naming ``cls`` inside a union."""
    for name, hint in _hints(cls).items():
        if typing.get_origin(hint) is typing.ClassVar:
            value = getattr(cls, name, None)
            if isinstance(value, enum.Enum) and name in TAG_NAMES:
                return TAG_NAMES[name], value.name
    return CLASS_TAG, cls.__name__


@functools.cache
def _tags(members: tuple[type, ...]) -> tuple[str, dict[str, type]]:
    keys = {_tag(m)[0] for m in members}
    if len(keys) != 1:
        raise TypeError(f"the classes {members} are not tagged alike")
    return keys.pop(), {_tag(m)[1]: m for m in members}


def _is_kemac_view(cls: type) -> bool:
    """A KEMAC whose key data is carried as Encr data bytes (shown as ``key_data``)."""
    names = {f.name for f in attrs.fields(cls)}
    return {"encr_alg", "encr_data"} <= names and "key_data" not in names


def _is_timestamp(cls: type) -> bool:
    names = {f.name for f in attrs.fields(cls)}
    return {"ts_type", "value"} <= names and _hints(cls).get("ts_type") is TsType


def _has_text(cls: type, name: str) -> bool:
    hint = _hints(cls).get(name)
    return name == "data" and hint is bytes and f"{name}_text" not in _hints(cls)


def _readable_text(value: bytes) -> str | None:
    if value and all(0x20 <= b < 0x7F for b in value):
        return value.decode("ascii")
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- to JSON --------------------------------------------------------------------------------


def _dump_object(cls: type, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hints = _hints(cls)
    kemac = _is_kemac_view(cls)
    for f in _init_fields(cls):
        item = getattr(value, f.name)
        if kemac and f.name == "encr_data" and value.encr_alg is EncrAlg.NULL:
            out["key_data"] = [_dump_object(KeyData, k) for k in decode_key_data(item)]
            continue
        out[f.name] = _dump(hints[f.name], item, NAMED_INTS.get((cls.__name__, f.name)))
        if f.name == "value" and _is_timestamp(cls) and value.ts_type in _NTP_TS:
            out["utc"] = _ntp_to_iso(item)
        if _has_text(cls, f.name):
            text = _readable_text(item)
            if text is not None:
                out[f"{f.name}_text"] = text
    return out


def _dump(tp: Any, value: Any, names: type[enum.Enum] | None = None) -> Any:
    args = _union_args(tp)
    if args is not None:
        if value is None:
            return None
        members = tuple(a for a in args if a is not type(None))
        if len(members) == 1:
            return _dump(members[0], value, names)
        key, by_tag = _tags(members)
        cls = type(value)
        tag = next(t for t, m in by_tag.items() if m is cls)
        return {key: tag, **_dump_object(cls, value)}
    if typing.get_origin(tp) is tuple:
        (inner, *_rest) = typing.get_args(tp)
        return [_dump(inner, v, names) for v in value]
    if isinstance(tp, type):
        if issubclass(tp, enum.Flag):
            return _dump_named_int(int(value), tp)
        if issubclass(tp, enum.Enum):
            return tp(value).name
        if tp is bool or tp is str:
            return value
        if tp is int:
            return _dump_named_int(int(value), names)
        if tp is bytes:
            return bytes(value).hex()
        if attrs.has(tp):
            return _dump_object(tp, value)
    raise TypeError(f"no JSON form for {tp!r}")


def _dump_named_int(value: int, names: type[enum.Enum] | None) -> Any:
    if names is None:
        return value
    if issubclass(names, enum.Flag):
        bits = [m for m in names if m.value & value]
        if sum(m.value for m in bits) != value:
            return value
        return [m.name for m in bits]
    try:
        return names(value).name
    except ValueError:
        return value


def _ntp_to_iso(value: int) -> str:
    micro = ((value & 0xFFFFFFFF) * 1_000_000) >> 32
    when = _NTP_EPOCH + datetime.timedelta(seconds=value >> 32, microseconds=micro)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{micro:06d}Z" if micro else "Z")


# --- from JSON ------------------------------------------------------------------------------


def _load_object(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise JsonFormError(path, f"expected an object ({cls.__name__}), got {_what(data)}")
    hints = _hints(cls)
    fields = _init_fields(cls)
    kemac = _is_kemac_view(cls)
    timestamp = _is_timestamp(cls)
    allowed = {f.name for f in fields}
    if kemac:
        allowed.add("key_data")
    if timestamp:
        allowed.add("utc")
    allowed |= {f"{f.name}_text" for f in fields if _has_text(cls, f.name)}
    for key in data:
        if key not in allowed:
            raise JsonFormError(
                _join(path, str(key)),
                f"unknown member; {cls.__name__} has " + ", ".join(sorted(allowed)),
            )
    values: dict[str, Any] = {}
    for f in fields:
        if f.name in data:
            values[f.name] = _load(
                hints[f.name],
                data[f.name],
                _join(path, f.name),
                NAMED_INTS.get((cls.__name__, f.name)),
            )
    if kemac and "key_data" in data:
        where = _join(path, "key_data")
        if "encr_data" in data:
            raise JsonFormError(where, "give key_data or encr_data, not both")
        if values.get("encr_alg", EncrAlg.NULL) is not EncrAlg.NULL:
            raise JsonFormError(
                where, "key_data is for a NULL-encrypted KEMAC; give the ciphertext as encr_data"
            )
        values["encr_data"] = encode_key_data(_load(tuple[KeyData, ...], data["key_data"], where))
    if timestamp and "utc" in data:
        _companion_utc(values, data["utc"], _join(path, "utc"))
    for f in fields:
        text_key = f"{f.name}_text"
        if _has_text(cls, f.name) and text_key in data:
            _companion_text(values, f.name, data[text_key], _join(path, text_key))
    for f in fields:
        if f.name not in values and f.default is attrs.NOTHING:
            raise JsonFormError(_join(path, f.name), f"missing (a {cls.__name__} needs it)")
    try:
        return cls(**{(f.alias or f.name): values[f.name] for f in fields if f.name in values})
    except MikeyError as e:
        raise JsonFormError(path, e.reason, e.code) from None
    except (TypeError, ValueError) as e:
        raise JsonFormError(path, str(e)) from None


def _companion_utc(values: dict[str, Any], text: Any, path: str) -> None:
    if values.get("ts_type") not in _NTP_TS:
        raise JsonFormError(path, "utc is for an NTP-UTC or NTP timestamp")
    if not isinstance(text, str):
        raise JsonFormError(path, f"expected an ISO 8601 UTC time, got {_what(text)}")
    ntp = _iso_to_ntp(text, path)
    if "value" not in values:
        values["value"] = ntp
    elif _is_u64(values["value"]) and _ntp_to_iso(values["value"]) != _ntp_to_iso(ntp):
        raise JsonFormError(
            path, f"{text} is not the value's time ({_ntp_to_iso(values['value'])}); give one"
        )


def _is_u64(value: Any) -> bool:
    return isinstance(value, int) and 0 <= value < 1 << 64


def _companion_text(values: dict[str, Any], name: str, text: Any, path: str) -> None:
    if not isinstance(text, str):
        raise JsonFormError(path, f"expected a string, got {_what(text)}")
    data = text.encode("utf-8")
    if name not in values:
        values[name] = data
    elif values[name] != data:
        raise JsonFormError(path, f"is not the text of {name}; give one")


def _iso_to_ntp(text: str, path: str) -> int:
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise JsonFormError(path, f"{text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise JsonFormError(path, f"{text!r} has no time zone (add Z for UTC)")
    delta = when - _NTP_EPOCH
    seconds = delta.days * 86400 + delta.seconds
    if not 0 <= seconds < 1 << 32:
        raise JsonFormError(path, f"{text} is outside NTP era 0 (1900 to 2036)")
    fraction = ((delta.microseconds << 32) + 999_999) // 1_000_000
    return (seconds << 32) | fraction


def _load(tp: Any, data: Any, path: str, names: type[enum.Enum] | None = None) -> Any:
    args = _union_args(tp)
    if args is not None:
        members = tuple(a for a in args if a is not type(None))
        if data is None:
            if len(members) < len(args):
                return None
            raise JsonFormError(path, "null is not allowed here")
        if len(members) == 1:
            return _load(members[0], data, path, names)
        key, by_tag = _tags(members)
        choices = ", ".join(by_tag)
        if not isinstance(data, Mapping):
            raise JsonFormError(path, f"expected an object with {key!r} ({choices})")
        if key not in data:
            raise JsonFormError(_join(path, key), f"missing (one of {choices})")
        cls = by_tag.get(data[key]) if isinstance(data[key], str) else None
        if cls is None:
            raise JsonFormError(_join(path, key), f"unknown {data[key]!r}; one of {choices}")
        return _load_object(cls, {k: v for k, v in data.items() if k != key}, path)
    if typing.get_origin(tp) is tuple:
        if not isinstance(data, list):
            raise JsonFormError(path, f"expected a list, got {_what(data)}")
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_load(inner, v, f"{path}[{i}]", names) for i, v in enumerate(data))
    if isinstance(tp, type):
        if issubclass(tp, enum.Flag):
            return tp(_load_int(data, path, tp))
        if issubclass(tp, enum.Enum):
            return _load_enum(tp, data, path)
        if tp is bool:
            if not isinstance(data, bool):
                raise JsonFormError(path, f"expected true or false, got {_what(data)}")
            return data
        if tp is int:
            return _load_int(data, path, names)
        if tp is str:
            if not isinstance(data, str):
                raise JsonFormError(path, f"expected a string, got {_what(data)}")
            return data
        if tp is bytes:
            if not isinstance(data, str) or not _HEX.fullmatch(data):
                raise JsonFormError(path, f"expected hex bytes, got {_what(data)}")
            return bytes.fromhex(data)
        if attrs.has(tp):
            return _load_object(tp, data, path)
    raise TypeError(f"no JSON form for {tp!r}")


def _load_enum(tp: type[enum.Enum], data: Any, path: str) -> Any:
    if isinstance(data, str):
        if data in tp.__members__:
            return tp.__members__[data]
    elif isinstance(data, int) and not isinstance(data, bool):
        try:
            return tp(data)
        except ValueError:
            pass
    choices = ", ".join(tp.__members__)
    raise JsonFormError(path, f"unknown {tp.__name__} {data!r}; one of {choices}")


def _load_int(data: Any, path: str, names: type[enum.Enum] | None) -> int:
    if isinstance(data, int) and not isinstance(data, bool):
        return data
    if names is not None:
        if issubclass(names, enum.Flag) and isinstance(data, list):
            value = 0
            for i, name in enumerate(data):
                value |= int(_load_enum(names, name, f"{path}[{i}]").value)
            return value
        if isinstance(data, str):
            return int(_load_enum(names, data, path).value)
        raise JsonFormError(
            path, f"expected a number or a {names.__name__} name, got {_what(data)}"
        )
    raise JsonFormError(path, f"expected an integer, got {_what(data)}")


def _what(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "true" if data else "false"
    if isinstance(data, str):
        return f"the string {data[:40]!r}"
    if isinstance(data, list):
        return "a list"
    if isinstance(data, Mapping):
        return "an object"
    return f"{type(data).__name__} {data!r}"
