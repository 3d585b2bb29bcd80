"""The list server's configuration file: its keys, defaults and groups; every bad value says
which key and why."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

import certs
from listserver.config import ConfigError, load

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
KMS_PAIR = certs.generate("kms", now=NOW)
PIN = KMS_PAIR.fingerprint().value

GOOD = f"""
sip = "127.0.0.1:5070"
core = "127.0.0.1:5060"
identity = "sip:lists@lab.example"
store = "state/lists.sqlite"
max_pending = 8

[kms]
address = "127.0.0.1:8443"
pin = "{PIN}"
key_file = "lists.psk"
cert = "lists"

[groups."sip:friends@lab.example"]
members = ["sip:alice@lab.example", "sip:bob@lab.example"]
kms_group = true

[groups."sip:work@lab.example"]
members = ["sip:carol@lab.example"]
"""


def _write(tmp_path: Path, text: str = GOOD, key: str = "00" * 16) -> Path:
    certs.write(certs.generate("lists", now=NOW), tmp_path)
    (tmp_path / "lists.psk").write_text(key)
    path = tmp_path / "lists.toml"
    path.write_text(text)
    return path


def test_a_good_file_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load(_write(tmp_path))
    assert config.sip == ("127.0.0.1", 5070) and config.core == ("127.0.0.1", 5060)
    assert config.identity == "sip:lists@lab.example"
    assert config.store == tmp_path / "state" / "lists.sqlite"
    assert config.max_pending == 8
    assert (config.max_stored_per_member, config.max_stored, config.max_members) == (
        100,
        10_000,
        100,
    )
    assert config.kms.address == ("127.0.0.1", 8443)
    assert config.kms.pin == KMS_PAIR.fingerprint()
    assert config.kms.key == bytes(16)
    assert config.kms.cert == tmp_path / "lists.crt"
    assert config.kms.key_file == tmp_path / "lists.key"
    assert config.kms.identity == "kms.e2ae.lab"
    friends = config.group("sip:friends@lab.example")
    assert friends is not None and friends.kms_group
    assert friends.members == ("sip:alice@lab.example", "sip:bob@lab.example")
    work = config.group("sip:work@lab.example")
    assert work is not None and not work.kms_group
    assert config.group("sip:alice@lab.example") is None
    assert config.registrars == (("127.0.0.1", 5060),)  # the core, unless configured


def test_registrars_are_the_addresses_given(tmp_path: Path) -> None:
    text = GOOD.replace(
        "max_pending = 8", 'max_pending = 8\nregistrars = ["127.0.0.2:5060", "[::1]:5061"]'
    )
    config = load(_write(tmp_path, text))
    assert config.registrars == (("127.0.0.2", 5060), ("::1", 5061))


def test_the_shared_key_is_not_in_the_repr(tmp_path: Path) -> None:
    config = load(_write(tmp_path, key="ab" * 16))
    assert "abab" not in repr(config) and "key=" not in repr(config.kms).replace("key_file", "")


def _edit(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sip = [", "lists.toml"),
        (_edit('sip = "127.0.0.1:5070"\n', ""), "missing sip"),
        (_edit("max_pending = 8", "max_pending = 8\ncolour = 1"), "unknown key(s) colour"),
        (_edit('sip = "127.0.0.1:5070"', 'sip = "lists:5070"'), "sip: 'lists' is not an IP"),
        (_edit('core = "127.0.0.1:5060"', 'core = "127.0.0.1:0"'), "core"),
        (_edit('core = "127.0.0.1:5060"', "core = 5060"), "core must be a HOST:PORT"),
        (_edit('identity = "sip:lists@lab.example"', 'identity = "lists"'), "identity must be"),
        (_edit("max_pending = 8", "max_pending = 0"), "max_pending must be a positive"),
        (_edit("max_pending = 8", "max_pending = 2.5"), "max_pending must be a positive"),
        (_edit("max_pending = 8", "max_pending = true"), "max_pending must be a positive"),
        (_edit('store = "state/lists.sqlite"', "store = 3"), "store must be a file name"),
        (_edit("[kms]\n", "[kmsx]\n"), "unknown key(s) kmsx"),
        (_edit('pin = "', 'colour = 1\npin = "'), "[kms]: unknown key(s) colour"),
        (_edit('address = "127.0.0.1:8443"\n', ""), "[kms]: missing address"),
        (_edit(f'pin = "{PIN}"', 'pin = "sha-256 zz"'), "[kms] pin"),
        (_edit('key_file = "lists.psk"', 'key_file = "none.psk"'), "[kms] key_file: cannot read"),
        (_edit('cert = "lists"', 'cert = "other"'), "[kms] cert: no"),
        (_edit('cert = "lists"', 'cert = "lists"\ntimeout = -1'), "[kms] timeout"),
        (_edit("kms_group = true", 'kms_group = "yes"'), "kms_group must be true or false"),
        (_edit("kms_group = true", "kms_group = true\nowner = 1"), "unknown key(s) owner"),
        (_edit('members = ["sip:carol@lab.example"]', "members = []"), "members must be"),
        (
            _edit('members = ["sip:carol@lab.example"]', 'members = ["carol"]'),
            "a member must be a SIP URI",
        ),
        (
            _edit('members = ["sip:carol@lab.example"]', 'members = ["sip:c@x", "sip:c@x"]'),
            "listed twice",
        ),
        (
            _edit('members = ["sip:carol@lab.example"]', 'members = ["sip:work@lab.example"]'),
            "its own member",
        ),
        (_edit('[groups."sip:work@lab.example"]', '[groups."work"]'), "the group PSI must be"),
        (_edit("max_pending = 8", "max_pending = 8\nmax_members = 1"), "2 members, at most 1"),
        (_edit("max_pending = 8", "max_pending = 8\nregistrars = []"), "registrars must be"),
        (
            _edit("max_pending = 8", 'max_pending = 8\nregistrars = ["core:5060"]'),
            "a registrars entry: 'core' is not an IP",
        ),
        (
            GOOD.split("[groups.")[0].replace("max_pending = 8", 'max_pending = 8\ngroups = "x"'),
            "groups must be tables",
        ),
    ],
)
def test_a_bad_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "none.toml")


def test_a_key_file_that_is_not_hex(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the shared key must be hex"):
        load(_write(tmp_path, key="not hex"))
