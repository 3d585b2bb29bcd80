"""The KMS configuration file: [kms] and its provisioned users; every bad value says which."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from certs.fingerprint import fingerprint_of
from certs.generate import generate
from kms.config import KmsConfigError, from_values, load

KEY_HEX = bytes(range(16)).hex()
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

GOOD = """
[kms]
identity = "kms.e2ae.lab"
listen = "127.0.0.1:8443"
cert = "kms.crt"
key = "kms.key"
state = "state/kms.sqlite"
ticket_lifetime = 60

[[kms.user]]
identity = "sip:alice@e2ae.lab"
key = "{key}"
tls = ["{pin}"]
groups = ["sip:conf@e2ae.lab"]

[[kms.user]]
identity = "sip:bob@e2ae.lab"
key = "{key}{key}"
"""


def test_a_file_with_users_and_relative_paths(tmp_path: Path) -> None:
    pair = generate("alice.e2ae.lab", now=NOW)
    pin = fingerprint_of(pair.cert_der)
    path = tmp_path / "kms.toml"
    path.write_text(GOOD.format(key=KEY_HEX, pin=pin.value))
    config = load(path)
    assert config.listen == ("127.0.0.1", 8443)
    assert config.state == tmp_path / "state" / "kms.sqlite"
    assert config.cert == tmp_path / "kms.crt"
    assert config.ticket_lifetime == 60.0 and config.replay_window == 300.0
    alice, bob = config.users
    assert alice.user.identity == "sip:alice@e2ae.lab" and alice.user.key == bytes(range(16))
    assert alice.user.groups == ("sip:conf@e2ae.lab",) and alice.tls == (pin,)
    assert len(bob.user.key) == 32 and bob.tls == ()
    assert config.pinned() == (pin,)
    assert config.identities_for(pair.cert_der) == ("sip:alice@e2ae.lab",)
    assert config.identities_for(generate("other", now=NOW).cert_der) == ()


BASE = {
    "identity": "kms",
    "listen": "127.0.0.1:0",
    "cert": "c",
    "key": "k",
    "state": "s",
}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"colour": "red"}, "unknown key(s) colour"),
        ({"state": ""}, "missing state"),
        ({"listen": "localhost"}, "expected HOST:PORT"),
        ({"ticket_lifetime": 0}, "ticket_lifetime must be a positive number"),
        ({"max_connections": 1.5}, "max_connections must be a whole number"),
        ({"max_body": True}, "max_body must be a positive number"),
        ({"user": {"identity": "x"}}, "array of tables"),
        ({"user": [{"identity": "x", "key": "zz" * 16}]}, "key is not hex"),
        ({"user": [{"identity": "x", "key": "00" * 15}]}, "at least 16 bytes"),
        ({"user": [{"identity": "x", "key": KEY_HEX, "pin": []}]}, "unknown key(s) pin"),
        ({"user": [{"identity": "x", "key": KEY_HEX, "tls": ["md5 00"]}]}, "user x"),
        ({"user": [{"identity": "x", "key": KEY_HEX, "groups": "g"}]}, "groups must be a list"),
        ({"user": [{"key": KEY_HEX}]}, "identity must be a non-empty string"),
        (
            {"user": [{"identity": "x", "key": KEY_HEX}, {"identity": "x", "key": KEY_HEX}]},
            "listed twice",
        ),
    ],
)
def test_bad_values_say_which(change: dict[str, object], words: str) -> None:
    with pytest.raises(KmsConfigError) as caught:
        from_values({**BASE, **change})
    assert words in str(caught.value)


def test_a_file_without_a_kms_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kms.toml"
    path.write_text("[other]\n")
    with pytest.raises(KmsConfigError, match=r"no \[kms\] table"):
        load(path)
    with pytest.raises(KmsConfigError, match="cannot read KMS configuration"):
        load(tmp_path / "absent.toml")
