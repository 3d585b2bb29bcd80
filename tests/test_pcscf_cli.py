"""``e2ae pcscf`` as a real process: configuration checks and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_e2ae

BASE = ["pcscf", "--gm", "127.0.0.1:0", "--core", "127.0.0.1:0", "--next-hop", "127.0.0.1:5999"]


def test_check_prints_the_configuration() -> None:
    result = run_e2ae([*BASE, "--iq", "127.0.0.1:2944", "--check"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [
        "gm=127.0.0.1:0",
        "core=127.0.0.1:0",
        "next-hop=127.0.0.1:5999/udp",
        "iq=127.0.0.1:2944",
        "iq-tls=no",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iq", "localhost:2944"], "iq: 'localhost' is not an IP address"),
        (["--iq", "127.0.0.1"], "iq: expected HOST:PORT"),
        (["--iq", "0.0.0.0:2944"], "is a wildcard"),
        ([], "missing setting(s): iq"),
        (["--iq", "127.0.0.1:1", "--iq-tls", "/nonexistent/pcscf"], "does not exist"),
    ],
)
def test_bad_settings_are_refused(args: list[str], message: str) -> None:
    result = run_e2ae([*BASE, *args, "--check"])
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_config_file_with_inline_policy_and_iq_tls(tmp_path: Path) -> None:
    made = run_e2ae(["certs", "new", "pcscf", "--out", str(tmp_path)])
    assert made.returncode == 0, made.stderr
    config = tmp_path / "pcscf.toml"
    config.write_text(
        '[pcscf]\ngm = "127.0.0.1:5060"\ncore = "127.0.0.1:5070"\nnext_hop = "127.0.0.1:5080"\n'
        'next_hop_transport = "tcp"\niq = "127.0.0.1:2944"\niq_tls = "pcscf"\n'
        '[e2ae]\nnetwork_mechanisms = ["msrp-tls"]\n'
    )
    result = run_e2ae(["pcscf", "--config", str(config), "--gm", "127.0.0.1:6060", "--check"])
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "gm=127.0.0.1:6060" in out and "next-hop=127.0.0.1:5080/tcp" in out
    assert "iq-tls=yes" in out


def test_bad_policy_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[e2ae]\non_agw_failure = "shrug"\n')
    result = run_e2ae([*BASE, "--iq", "127.0.0.1:1", "--policy", str(policy), "--check"])
    assert result.returncode == 2
    assert "on_agw_failure must be reject or bypass" in result.stderr.decode()
