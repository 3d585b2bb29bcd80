"""What the proxy core holds is bounded: registrations in all and per source address, call legs
and server transactions. Beyond a bound a new REGISTER, INVITE or request gets 503 with
Retry-After and a log event; what is already held (refreshes, removals, live calls, the
transactions' retransmissions) goes on."""

from __future__ import annotations

import pytest

from pcscf.sip.message import Request, Response
from pcscf.sip.proxy import Log, Peer, ProxyConfig, ProxyCore
from tests.pcscf.sip.test_proxy import (
    CORE,
    GM,
    SCSCF,
    SDP,
    _ids,
    invite,
    register,
    req,
    resp_to,
    sends,
)


def _core(**limits: int) -> ProxyCore:
    ids = _ids()
    config = ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF, **limits)
    return ProxyCore(config, new_id=lambda: next(ids))


def _refused(out: list[object]) -> Response:
    (answer,) = sends(out, "gm")
    assert isinstance(answer.message, Response)
    return answer.message


def _try_register(core: ProxyCore, ue: Peer, user: str) -> list[object]:
    msg = req(
        f"""REGISTER sip:ims.test SIP/2.0
Via: SIP/2.0/UDP {ue.host}:{ue.port};branch=z9hG4bKx{user}
Max-Forwards: 70
From: <sip:{user}@ims.test>;tag=r1
To: <sip:{user}@ims.test>
Call-ID: reg-{user}
CSeq: 1 REGISTER
Contact: <sip:{user}@{ue.host}:{ue.port}>
Expires: 600"""
    )
    return core.receive(ue, msg, 1.0)


def test_registrations_per_source_address() -> None:
    core = _core(max_registrations_per_source=2, retry_after=7)
    for n in range(2):
        register(core, Peer("gm", "udp", "192.0.2.10", 40000 + n), f"u{n}")
    assert len(core.registrar) == 2
    out = _try_register(core, Peer("gm", "udp", "192.0.2.10", 40009), "u9")
    refused = _refused(out)
    assert refused.status == 503 and "too many registrations from 192.0.2.10" in refused.reason
    assert refused.get("Retry-After") == "7"
    assert any(isinstance(a, Log) and a.level == "warn" for a in out)
    assert len(core.registrar) == 2
    # another source still registers; a refresh from a registered flow passes
    register(core, Peer("gm", "udp", "192.0.2.11", 40000), "v0")
    register(core, Peer("gm", "udp", "192.0.2.10", 40000), "u0", expires=300)
    assert len(core.registrar) == 3
    # removal frees the slot
    register(core, Peer("gm", "udp", "192.0.2.10", 40001), "u1", expires=0)
    register(core, Peer("gm", "udp", "192.0.2.10", 40009), "u9")
    assert core.registrar.from_host("192.0.2.10") == 2


def test_registrations_in_all() -> None:
    core = _core(max_registrations=3)
    for n in range(3):
        register(core, Peer("gm", "udp", f"192.0.2.{10 + n}", 40000), f"u{n}")
    refused = _refused(_try_register(core, Peer("gm", "udp", "192.0.2.50", 40000), "late"))
    assert refused.status == 503 and "registrations full (3)" in refused.reason


def test_calls_in_all() -> None:
    core = _core(max_calls=2)
    ue = Peer("gm", "udp", "192.0.2.10", 40000)
    register(core, ue, "alice")
    for n in range(2):
        out = invite(core, call=f"c{n}", branch=f"b{n}", ue=ue)
        assert not [s for s in sends(out, "gm") if getattr(s.message, "status", 0) >= 300]
    out = invite(core, body=SDP, call="c9", branch="b9", ue=ue)
    refused = [s.message for s in sends(out, "gm") if isinstance(s.message, Response)]
    assert [r.status for r in refused if r.status >= 200] == [503]
    assert refused[-1].get("Retry-After") == "30"
    assert "calls full (2)" in refused[-1].reason


def _options(ue: Peer, n: int) -> Request:
    return req(
        f"""OPTIONS sip:bob@ims.test SIP/2.0
Via: SIP/2.0/UDP {ue.host}:{ue.port};branch=z9hG4bKopt{n}
Max-Forwards: 70
From: <sip:alice@ims.test>;tag=o{n}
To: <sip:bob@ims.test>
Call-ID: opt-{n}
CSeq: 1 OPTIONS"""
    )


def test_server_transactions_in_all() -> None:
    """Finished transactions count until they end (Timer J, 32 s over UDP): a flood of new
    requests is refused statelessly once the table is full, retransmissions of the held ones
    are still answered, and the table takes new ones again when the held ones end."""
    core = _core(max_transactions=3, retry_after=9)
    ue = Peer("gm", "udp", "192.0.2.10", 40000)
    register(core, ue, "alice")  # one server transaction (finished, held)
    for n in range(2):
        out = core.receive(ue, _options(ue, n), 2.0)
        (fwd,) = sends(out, "core")
        assert isinstance(fwd.message, Request)
        core.receive(SCSCF, resp_to(fwd.message, 200), 2.1)
    assert len(core.server_txns) == 3
    out = core.receive(ue, _options(ue, 9), 3.0)
    refused = _refused(out)
    assert refused.status == 503 and "transactions full (3)" in refused.reason
    assert refused.get("Retry-After") == "9"
    assert refused.to.tag is not None
    (event,) = [a for a in out if isinstance(a, Log)]
    assert event.level == "warn" and event.fields["limit"] == "transactions full (3)"
    assert event.fields["call_id"] == "opt-9" and event.fields["method"] == "OPTIONS"
    assert len(core.server_txns) == 3 and sends(out, "core") == []  # nothing forwarded
    # a retransmission of a held one gets its 200 again
    again = sends(core.receive(ue, _options(ue, 0), 3.1), "gm")
    assert [getattr(s.message, "status", None) for s in again] == [200]
    # after Timer J the held ones end and a new request is forwarded
    core.tick(2.1 + 32.1)
    assert len(core.server_txns) == 0
    assert len(sends(core.receive(ue, _options(ue, 10), 35.0), "core")) == 1


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF, max_calls=0)
    with pytest.raises(ValueError, match="max_transactions"):
        ProxyConfig(gm=GM, core=CORE, next_hop=SCSCF, max_transactions=0)
