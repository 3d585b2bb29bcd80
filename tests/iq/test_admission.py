"""The Iq admission rules (pure): who may register as which gateway."""

from __future__ import annotations

import pytest

from iq.admission import AllowEntry, IqAdmission, IqLimits, KnownGateway, PeerIdentity
from iq.errors import LocalIqError

A = PeerIdentity("127.0.0.1")
B = PeerIdentity("127.0.0.2")
FP1 = PeerIdentity("127.0.0.1", "sha-256 AA")
FP2 = PeerIdentity("127.0.0.1", "sha-256 BB")
PLAIN = IqAdmission.build(tls=False, insecure=True, allow=["<agw1>@127.0.0.0/8"])
TLS = IqAdmission.build(tls=True, insecure=False, allow=())


def known(identity: PeerIdentity, *, up: bool, same: bool, contexts: bool = True) -> KnownGateway:
    return KnownGateway(identity, link_up=up, same_link=same, has_contexts=contexts)


def test_allow_entries_parse_and_match() -> None:
    entry = AllowEntry.parse("<agw1>@127.0.0.1")
    assert entry.admits("<agw1>", "127.0.0.1")
    assert not entry.admits("<agw1>", "127.0.0.2")
    assert not entry.admits("<agw2>", "127.0.0.1")
    assert not entry.admits("<agw1>", "not-an-ip")
    assert str(entry) == "<agw1>@127.0.0.1"
    assert AllowEntry.parse("[127.0.0.1]:2944@127.0.0.0/8").mid == "[127.0.0.1]:2944"
    assert AllowEntry.parse("<agw>@::1").admits("<agw>", "::1")
    for bad in ("<agw1>", "@127.0.0.1", "<agw1>@", "<agw1>@somewhere"):
        with pytest.raises(LocalIqError):
            AllowEntry.parse(bad)


def test_plain_tcp_needs_the_opt_in_and_an_allow_list() -> None:
    with pytest.raises(LocalIqError, match="insecure"):
        IqAdmission.build(tls=False, insecure=False, allow=["<a>@127.0.0.1"])
    with pytest.raises(LocalIqError, match="allow-list"):
        IqAdmission.build(tls=False, insecure=True, allow=())
    assert not PLAIN.authenticated and TLS.authenticated


def test_new_gateway_only_from_the_allow_list() -> None:
    assert PLAIN.service_change("<agw1>", "register", A, link_mid=None, known=None) is None
    refusal = PLAIN.service_change("<agw9>", "register", A, link_mid=None, known=None)
    assert refusal is not None and refusal.code == 402
    # with TLS and no allow-list, any pinned peer may register a new mId
    assert TLS.service_change("<agw9>", "register", FP1, link_mid=None, known=None) is None


@pytest.mark.parametrize("kind", ["register", "restart", "forced"])
def test_an_mid_in_service_on_another_link_is_never_taken(kind: str) -> None:
    for policy, who in ((PLAIN, A), (TLS, FP1)):
        refusal = policy.service_change(
            "<agw1>",
            kind,
            who,
            link_mid=None,
            known=known(who, up=True, same=False),  # type: ignore[arg-type]
        )
        assert refusal is not None and refusal.code == 402


def test_one_link_one_mid() -> None:
    refusal = TLS.service_change("<agw2>", "register", FP1, link_mid="<agw1>", known=None)
    assert refusal is not None and "registered as <agw1>" in refusal.reason


def test_a_down_gateway_with_contexts_comes_back_only_as_the_same_peer() -> None:
    down = known(FP1, up=False, same=False)
    assert TLS.service_change("<agw1>", "restart", FP1, link_mid=None, known=down) is None
    refused = TLS.service_change("<agw1>", "restart", FP2, link_mid=None, known=down)
    assert refused is not None and refused.code == 402
    plain_down = known(A, up=False, same=False)
    assert PLAIN.service_change("<agw1>", "register", B, link_mid=None, known=plain_down)
    # nothing left to take over: any admitted peer may have the mId
    empty = known(FP1, up=False, same=False, contexts=False)
    assert TLS.service_change("<agw1>", "register", FP2, link_mid=None, known=empty) is None


def test_forced_only_from_the_gateways_own_link() -> None:
    own = known(A, up=True, same=True)
    assert PLAIN.service_change("<agw1>", "forced", A, link_mid="<agw1>", known=own) is None
    assert PLAIN.service_change("<agw1>", "forced", A, link_mid=None, known=None) is not None


def test_limits_are_checked() -> None:
    assert IqLimits().max_links == 64
    with pytest.raises(LocalIqError):
        IqLimits(max_pending=0)
    with pytest.raises(LocalIqError):
        IqLimits(register_timeout=0)
