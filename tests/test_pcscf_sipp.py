"""The P-CSCF against SIPp as the UE (Gm side) and as the core (registrar / S-CSCF / far end).

Every process is real and talks over 127.0.0.1 with ephemeral ports. The scenarios in
tests/sipp/ check what each side must see (Security-Server in the 200 to REGISTER, Path at the
registrar, the MSRP and BFCP m-lines of the offer and the answer).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sipp_harness import finish, free_port, pcscf, sipp

pytestmark = pytest.mark.peer


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", ["orig", "term", "cancel", "busy"])
def test_call_through_pcscf(tmp_path: Path, case: str, transport: str) -> None:
    """REGISTER, then the call of ``case``; both SIPp sides must complete their scenario."""
    core_port = free_port()
    extra = ["--next-hop-transport", "tcp"] if transport == "t1" else []
    with pcscf(tmp_path, core_port, *extra) as pc:
        core = sipp(tmp_path, f"core_{case}.xml", core_port, transport=transport)
        ue = sipp(tmp_path, f"ue_{case}.xml", free_port(), remote=pc.gm, transport=transport)
        ue_errors = finish(tmp_path, ue, pc)
        core_errors = finish(tmp_path, core, pc)
    assert ue_errors == "", ue_errors
    assert core_errors == "", core_errors
