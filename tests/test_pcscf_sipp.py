"""The P-CSCF with e2ae against SIPp as the UE (Gm side) and as the core (registrar / S-CSCF /
far end), with an access gateway process registered over Iq.

Every process is real and talks over 127.0.0.1 with ephemeral ports. The scenarios in
tests/sipp/ check what each side must see: Security-Server in the 200 to REGISTER, Path at the
registrar; towards the core TCP/MSRP and TCP/BFCP on AGW ports with no fingerprint and no
a=3ge2ae; towards the UE TCP/TLS/MSRP and TCP/TLS/BFCP with the AGW's fingerprint and
a=3ge2ae:applied. After the calls the AGW must hold no termination.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sipp_harness import agw, finish, free_port, pcscf, sipp

pytestmark = pytest.mark.peer


def _policy(tmp: Path, text: str) -> list[str]:
    path = tmp / "policy.toml"
    path.write_text("[e2ae]\n" + text)
    return ["--policy", str(path)]


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", ["orig", "term", "cancel", "busy"])
def test_call_through_pcscf(tmp_path: Path, case: str, transport: str) -> None:
    """REGISTER, then the call of ``case``; both SIPp sides must complete their scenario and
    the AGW must hold nothing afterwards (BYE, CANCEL and 486 release the terminations)."""
    core_port = free_port()
    extra = ["--next-hop-transport", "tcp"] if transport == "t1" else []
    with pcscf(tmp_path, core_port, *extra) as pc:
        with agw(tmp_path, pc.iq) as gw:
            core = sipp(tmp_path, f"core_{case}.xml", core_port, transport=transport)
            ue = sipp(tmp_path, f"ue_{case}.xml", free_port(), remote=pc.gm, transport=transport)
            ue_errors = finish(tmp_path, ue, pc)
            core_errors = finish(tmp_path, core, pc)
    assert ue_errors == "", ue_errors
    assert core_errors == "", core_errors
    assert gw.held == 0, gw.log.read_text()[-3000:]


def test_agw_down_rejects_with_503(tmp_path: Path) -> None:
    """No AGW registered and on_agw_failure = reject: the e2ae INVITE gets 503 with a Warning
    naming the cause, and the core never sees it."""
    core_port = free_port()
    with pcscf(tmp_path, core_port, *_policy(tmp_path, 'on_agw_failure = "reject"\n')) as pc:
        core = sipp(tmp_path, "core_register.xml", core_port)
        ue = sipp(tmp_path, "ue_agw_down.xml", free_port(), remote=pc.gm)
        ue_errors = finish(tmp_path, ue, pc)
        core_errors = finish(tmp_path, core, pc)
    assert ue_errors == "", ue_errors
    assert core_errors == "", core_errors


def test_agw_down_bypass_forwards_untouched(tmp_path: Path) -> None:
    """No AGW registered and on_agw_failure = bypass: the call goes through without e2ae (the
    core gets the UE's TLS m-lines and fingerprint as they were)."""
    core_port = free_port()
    with pcscf(tmp_path, core_port, *_policy(tmp_path, 'on_agw_failure = "bypass"\n')) as pc:
        core = sipp(tmp_path, "core_bypass.xml", core_port)
        ue = sipp(tmp_path, "ue_bypass.xml", free_port(), remote=pc.gm)
        ue_errors = finish(tmp_path, ue, pc)
        core_errors = finish(tmp_path, core, pc)
    assert ue_errors == "", ue_errors
    assert core_errors == "", core_errors
