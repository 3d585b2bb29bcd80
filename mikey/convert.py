"""Named attrs converters (mypy's attrs plugin only follows named functions)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mikey.constants import (
    DataType,
    EncrAlg,
    ErrorNo,
    KeyType,
    MacAlg,
    PrfFunc,
    TsType,
)
from mikey.wire import to_enum

if TYPE_CHECKING:
    from mikey.message import GenericIdEntry, SrtpIdEntry
    from mikey.payloads import Payload, SpParam


def data_type(value: int) -> DataType:
    return to_enum(DataType, ErrorNo.INVALID_DT, value)


def prf_func(value: int) -> PrfFunc:
    return to_enum(PrfFunc, ErrorNo.INVALID_PRF, value)


def encr_alg(value: int) -> EncrAlg:
    return to_enum(EncrAlg, ErrorNo.INVALID_EA, value)


def mac_alg(value: int) -> MacAlg:
    return to_enum(MacAlg, ErrorNo.INVALID_MAC, value)


def ts_type(value: int) -> TsType:
    return to_enum(TsType, ErrorNo.INVALID_TS, value)


def key_type(value: int) -> KeyType:
    return to_enum(KeyType, ErrorNo.UNSPECIFIED, value)


def ints(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)


def sp_params(values: Iterable[SpParam]) -> tuple[SpParam, ...]:
    return tuple(values)


def srtp_entries(values: Iterable[SrtpIdEntry]) -> tuple[SrtpIdEntry, ...]:
    return tuple(values)


def generic_entries(values: Iterable[GenericIdEntry]) -> tuple[GenericIdEntry, ...]:
    return tuple(values)


def payloads(values: Iterable[Payload]) -> tuple[Payload, ...]:
    return tuple(values)
