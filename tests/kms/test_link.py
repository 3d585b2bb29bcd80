"""kms.link: the one ``[kms]`` table the list server and the MRFC read, each error naming
its key and raised as the caller's own error type."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

import certs
from kms.link import DEFAULT_KMS_IDENTITY, KMS_KEYS, KmsLink, link_from_values

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
PIN = certs.generate("kms", now=NOW).fingerprint()


class _Mine(ValueError):
    """A caller's configuration error."""


def _files(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "el.psk").write_text("ab" * 16 + "\n")
    (tmp_path / "el.crt").write_text("c")
    (tmp_path / "el.key").write_text("k")
    return {"address": "127.0.0.1:8443", "pin": str(PIN), "key_file": "el.psk", "cert": "el"}


def test_a_table_gives_the_link_with_paths_from_the_file_s_folder(tmp_path: Path) -> None:
    values = _files(tmp_path)
    link = link_from_values(values, tmp_path, _Mine)
    assert link == KmsLink(
        ("127.0.0.1", 8443),
        PIN,
        bytes.fromhex("ab" * 16),
        tmp_path / "el.crt",
        tmp_path / "el.key",
        DEFAULT_KMS_IDENTITY,
        10.0,
    )
    assert "abab" not in repr(link)
    values |= {"identity": "kms.example", "timeout": 2}
    link = link_from_values(values, tmp_path, _Mine)
    assert (link.identity, link.timeout) == ("kms.example", 2.0)
    assert set(values) == set(KMS_KEYS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": 1}, "[kms]: unknown key(s) colour"),
        ({"address": ""}, "[kms]: missing address"),
        ({"pin": None}, "[kms]: missing pin"),
        ({"address": 8443}, "[kms] address must be a HOST:PORT string"),
        ({"address": "127.0.0.1:0"}, "[kms] address"),
        ({"pin": "sha-256 zz"}, "[kms] pin"),
        ({"key_file": "none.psk"}, "[kms] key_file: cannot read"),
        ({"cert": "other"}, "[kms] cert: no"),
        ({"identity": ""}, "[kms] identity must be a non-empty string"),
        ({"timeout": 0}, "[kms] timeout must be a positive number"),
        ({"timeout": True}, "[kms] timeout must be a positive number"),
    ],
)
def test_each_bad_key_is_named_in_the_caller_s_error(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    values = _files(tmp_path) | change
    with pytest.raises(_Mine) as caught:
        link_from_values(values, tmp_path, _Mine)
    assert message in str(caught.value)


def test_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(_Mine, match=r"\[kms\] must be a table"):
        link_from_values("kms", tmp_path, _Mine)
