"""The MRFC's TOML configuration: a good file read in full, and each bad key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from certs.psk import DEFAULT_PSK_CIPHERS
from mrfc.config import ConfigError, load
from tests.mrfc.test_cli import write_config


def test_a_good_file(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, extra="floors = [1, 2]\nallow_plain = false"))
    assert config.sip == ("127.0.0.1", 0) and config.next_hop == ("127.0.0.1", 5060)
    assert config.identity == "sip:mrfc@lab.example"
    assert config.psk_suites == DEFAULT_PSK_CIPHERS and config.ticket_source == "kms"
    (conf,) = config.conferences
    assert conf.uri == "sip:conf1@lab.example" and conf.floors == (1, 2)
    assert not conf.allow_plain
    assert conf.participants == ("sip:alice@lab.example", "sip:bob@lab.example")
    assert config.conference("sip:conf1@lab.example") is conf
    assert config.conference("sip:other@lab.example") is None
    assert config.mp.cert == tmp_path / "mrfc.crt" and config.mp.peer is not None
    assert not config.mp.insecure
    assert config.kms.key == bytes(16) and "key=" not in repr(config.kms)
    assert (config.max_participants, config.max_setups) == (32, 64)


def test_the_participant_and_set_up_bounds_are_read(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, top="max_participants = 3\nmax_setups = 5"))
    assert (config.max_participants, config.max_setups) == (3, 5)


def test_insecure_mp_is_an_explicit_opt_in(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    start, end = text.index('tls = "mrfc"'), text.index("[kms]")
    path.write_text(text[:start] + "insecure = true\n\n" + text[end:])
    config = load(path)
    assert config.mp.insecure and config.mp.allow == ("<mrfp>@127.0.0.1",)
    path.write_text(text[:start] + "\n" + text[end:])
    with pytest.raises(ConfigError, match=r"\[mp\]: missing tls, peer \(or insecure = true\)"):
        load(path)


@pytest.mark.parametrize(
    ("top", "extra", "words"),
    [
        ('psk_suites = ["NULL-SHA"]', "", "psk_suites: NULL-SHA not allowed"),
        ("psk_suites = []", "", "psk_suites must be a non-empty list"),
        ('ticket_source = "elsewhere"', "", 'ticket_source must be "kms" or "self"'),
        ('ticket_source = "self"', "", "needs [self_kms] config"),
        ("setup_timeout = 0", "", "setup_timeout must be a positive number"),
        ("max_participants = 0", "", "max_participants must be a positive whole number"),
        ("max_setups = 1.5", "", "max_setups must be a positive whole number"),
        ("max_setups = true", "", "max_setups must be a positive whole number"),
        ("colour = 1", "", "unknown key(s) colour"),
        ('identity2 = "x"', "", "unknown key(s) identity2"),
        ("", 'participants = ["alice"]', "a participant must be a SIP URI"),
        ("", "participants = []", "participants must be a non-empty list"),
        ("", 'allow_plain = "yes"', "allow_plain must be true or false"),
        ("", "floors = [1, 1]", "floors must be distinct"),
        ("", "chair = 1", "unknown key(s) chair"),
    ],
)
def test_each_bad_key_is_named(tmp_path: Path, top: str, extra: str, words: str) -> None:
    path = write_config(tmp_path, extra, top=top)
    if 'participants = ["' in extra or "participants = []" in extra:
        text = path.read_text()
        text = text.replace('participants = ["sip:alice@lab.example", "sip:bob@lab.example"]\n', "")
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert words in str(info.value)


def test_a_missing_key_file_and_bad_pins(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "mrfc.psk").unlink()
    with pytest.raises(ConfigError, match=r"\[kms\] key_file"):
        load(path)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('peer = "sha-256', 'peer = "md5'))
    with pytest.raises(ConfigError, match=r"\[mp\] peer"):
        load(path)
    path.write_text(path.read_text().replace('sip = "127.0.0.1:0"', 'sip = "nowhere"'))
    with pytest.raises(ConfigError, match="sip"):
        load(path)
