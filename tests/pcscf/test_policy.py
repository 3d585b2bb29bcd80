"""The e2ae policy file: read by the one TOML reader, every failure a PolicyError that says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcscf.policy import Policy, PolicyError, load_policy


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "policy.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_knobs_are_read_from_the_e2ae_table(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[e2ae]\non_agw_failure = "bypass"\niq_timeout = 0.5\nnetwork_mechanisms = ["msrp-tls"]\n',
    )
    policy = load_policy(path)
    assert policy.on_agw_failure == "bypass"
    assert policy.iq_timeout == 0.5
    assert policy.network_mechanisms == frozenset({"msrp-tls"})
    assert policy.on_tls_failure == Policy().on_tls_failure


def test_a_file_without_an_e2ae_table_is_the_default_policy(tmp_path: Path) -> None:
    assert load_policy(_write(tmp_path, "[other]\nx = 1\n")) == Policy()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[e2ae\n", "policy.toml"),
        ("e2ae = 3\n", "[e2ae] must be a table"),
        (b"[e2ae]\nx = '\xff'\n", "not UTF-8"),
        ("[e2ae]\nno_such_knob = 1\n", "unknown policy key(s): no_such_knob"),
        ('[e2ae]\non_agw_failure = "ignore"\n', "on_agw_failure must be reject or bypass"),
        ("[e2ae]\niq_timeout = 0\n", "iq_timeout must be a positive number"),
    ],
)
def test_a_bad_file_is_a_policy_error_that_says_why(
    tmp_path: Path, text: str | bytes, words: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(_write(tmp_path, text))
    assert words in str(caught.value)


def test_a_missing_file_names_itself_as_the_policy(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(PolicyError, match=r"cannot read policy .*absent\.toml"):
        load_policy(missing)
