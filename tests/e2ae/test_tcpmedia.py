"""The one a=setup / TLS role vocabulary (RFC 4145, RFC 4572/8122)."""

from __future__ import annotations

import pytest

from e2ae.tcpmedia import SETUPS, VALID_ANSWERS, answer_to, mirror, tls_role


def test_setups_are_the_four_rfc_4145_values() -> None:
    assert SETUPS == ("active", "passive", "actpass", "holdconn")
    assert set(VALID_ANSWERS) == set(SETUPS)


@pytest.mark.parametrize("setup", SETUPS)
def test_answer_to_is_always_a_valid_answer_and_never_actpass(setup: str) -> None:
    answer = answer_to(setup)  # type: ignore[arg-type]
    assert answer in VALID_ANSWERS[setup]  # type: ignore[index]
    assert answer != "actpass"


@pytest.mark.parametrize("setup", SETUPS)
def test_mirror_is_an_involution(setup: str) -> None:
    assert mirror(mirror(setup)) == setup  # type: ignore[arg-type]


def test_mirror_and_answer_differ_only_on_actpass() -> None:
    assert [s for s in SETUPS if mirror(s) != answer_to(s)] == ["actpass"]
    assert mirror("actpass") == "actpass" and answer_to("actpass") == "passive"


def test_the_tcp_client_is_the_tls_client() -> None:
    assert tls_role("active") == "client"
    assert tls_role("passive") == "server"
    assert tls_role("actpass") is None and tls_role("holdconn") is None
    # the two ends of one connection always take opposite TLS roles
    assert {tls_role("active"), tls_role(mirror("active"))} == {"client", "server"}
