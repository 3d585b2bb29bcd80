"""Example Iq exchanges of the e2ae profile: an originating and a terminating call.

Pure. Used by the documentation (docs/iq-profile.md is these messages), by the tests (codec
round trip, tshark dissection) and by ``e2ae iq example`` to print them.
Addresses are those of docs/protocol.md §14: UE 192.0.2.10, AGW access 198.51.100.1, AGW core
203.0.113.1, core peer 203.0.113.50.
"""

from __future__ import annotations

from typing import Literal

import attrs

from certs.fingerprint import Fingerprint
from iq import profile as p
from iq.codec import (
    Action,
    ErrorDescriptor,
    Message,
    TransactionPending,
    TransactionReply,
    TransactionRequest,
)

ALG_MID = "[203.0.113.10]:2944"
AGW_MID = "<agw1.example.net>"
UE_FP = Fingerprint(
    "sha-256", bytes.fromhex("4AADB9B13F82183B540212DF3E5D496B19E57CAB3A1A2B3C4D5E6F708192A3B4")
)
AGW_FP = Fingerprint(
    "sha-256", bytes.fromhex("9F012C447AB3C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D70")
)
T0 = 1795449600.0  # 2026-11-23 16:00:00 UTC

Direction = Literal["agw->alg", "alg->agw"]


@attrs.frozen
class Step:
    direction: Direction
    title: str
    message: Message
    request: p.IqRequest | None = None
    reply: p.IqReply | None = None


def _req(tid: int, mid: str, request: p.IqRequest) -> Message:
    return Message(mid, (TransactionRequest(tid, p.encode_request(request)),))


def _rep(tid: int, mid: str, request: p.IqRequest, reply: p.IqReply) -> Message:
    return Message(mid, (TransactionReply(tid, p.encode_reply(request, reply)),))


def registration() -> list[Step]:
    sc = p.ServiceChangeRequest("register")
    ok = p.ServiceChangeReply()
    return [
        Step("agw->alg", "AGW registers", _req(1, AGW_MID, sc), sc),
        Step("alg->agw", "ALG accepts", _rep(1, ALG_MID, sc, ok), sc, ok),
    ]


def originating() -> list[Step]:
    """UE-A (active, with its fingerprint) calls out over MSRP."""
    call_id = "a84b4c76e66710@pc33.example.com"
    reserve = p.ReserveRequest(
        call_id=call_id,
        streams=(
            p.StreamReservation(
                stream=1,
                media="message",
                access_setup="passive",
                core_setup="active",
                ue_fingerprints=(UE_FP,),
                ue_address=p.Endpoint("192.0.2.10", 7394),
                ue_setup="active",
            ),
        ),
    )
    reserved = p.ReserveReply(
        context=7,
        streams=(
            p.ReservedStream(
                stream=1,
                access_termination="acc/7/1",
                core_termination="core/7/1",
                access=p.Endpoint("198.51.100.1", 40001),
                core=p.Endpoint("203.0.113.1", 40002),
                agw_fingerprint=AGW_FP,
                access_setup="passive",
                core_setup="active",
            ),
        ),
    )
    configure = p.ConfigureRequest(
        context=7,
        streams=(
            p.StreamConfiguration(
                stream=1,
                media="message",
                access_termination="acc/7/1",
                core_termination="core/7/1",
                core_address=p.Endpoint("203.0.113.50", 12763),
                core_remote_setup="passive",
            ),
        ),
    )
    configured = p.ConfigureReply(7)
    established = p.NotifyRequest(
        p.IqEvent(
            kind="tls-established",
            context=7,
            termination="acc/7/1",
            stream=1,
            timestamp=p.timestamp(T0 + 1.5),
            peer="192.0.2.10:7394",
        )
    )
    release = p.ReleaseRequest(7, ("acc/7/1", "core/7/1"))
    released = p.ReleaseReply(
        7,
        (
            p.TerminationStatistics("acc/7/1", 1830, 2210, 4, 5, "established"),
            p.TerminationStatistics("core/7/1", 2169, 1789, 5, 4),
        ),
    )
    return [
        Step("alg->agw", "Reserve AGW connection point", _req(11, ALG_MID, reserve), reserve),
        Step("agw->alg", "reserved", _rep(11, AGW_MID, reserve, reserved), reserve, reserved),
        Step(
            "alg->agw", "Configure from the core's answer", _req(12, ALG_MID, configure), configure
        ),
        Step(
            "agw->alg",
            "configured",
            _rep(12, AGW_MID, configure, configured),
            configure,
            configured,
        ),
        Step("agw->alg", "TLS session established", _req(2, AGW_MID, established), established),
        Step(
            "alg->agw",
            "acknowledged",
            _rep(2, ALG_MID, established, p.NotifyReply()),
            established,
            p.NotifyReply(),
        ),
        Step("alg->agw", "Release", _req(13, ALG_MID, release), release),
        Step(
            "agw->alg",
            "released, with statistics",
            _rep(13, AGW_MID, release, released),
            release,
            released,
        ),
    ]


_TERMINATING_UE: tuple[tuple[int, p.MediaType, int], ...] = (
    (1, "message", 7400),
    (2, "application", 50010),
)


def terminating() -> list[Step]:
    """The core offers MSRP and BFCP to UE-B; UE-B answers passive, so the AGW is TLS client."""
    call_id = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@core.example.net"
    reserve = p.ReserveRequest(
        call_id=call_id,
        streams=(
            p.StreamReservation(
                stream=1,
                media="message",
                access_setup="actpass",
                core_setup="passive",
                core_address=p.Endpoint("203.0.113.50", 12763),
                core_remote_setup="active",
            ),
            p.StreamReservation(
                stream=2,
                media="application",
                access_setup="actpass",
                core_setup="passive",
                core_address=p.Endpoint("203.0.113.50", 50000),
                core_remote_setup="active",
            ),
        ),
    )
    reserved = p.ReserveReply(
        context=8,
        streams=(
            p.ReservedStream(
                1,
                "acc/8/1",
                "core/8/1",
                p.Endpoint("198.51.100.1", 40011),
                p.Endpoint("203.0.113.1", 40012),
                AGW_FP,
                "actpass",
                "passive",
            ),
            p.ReservedStream(
                2,
                "acc/8/2",
                "core/8/2",
                p.Endpoint("198.51.100.1", 40013),
                p.Endpoint("203.0.113.1", 40014),
                AGW_FP,
                "actpass",
                "passive",
            ),
        ),
    )
    configure = p.ConfigureRequest(
        context=8,
        streams=tuple(
            p.StreamConfiguration(
                stream=n,
                media=media,
                access_termination=f"acc/8/{n}",
                core_termination=f"core/8/{n}",
                ue_address=p.Endpoint("192.0.2.20", port),
                ue_setup="passive",
                ue_fingerprints=(UE_FP,),
                access_setup="active",
                establish_tls=True,
            )
            for n, media, port in _TERMINATING_UE
        ),
    )
    configured = p.ConfigureReply(8)
    failure = p.NotifyRequest(
        p.IqEvent(
            kind="tls-failure",
            context=8,
            termination="acc/8/2",
            stream=2,
            timestamp=p.timestamp(T0 + 2.25),
            cause="fingerprint-mismatch",
            peer="192.0.2.20:50010",
        )
    )
    release = p.ReleaseRequest(8)
    released = p.ReleaseReply(
        8,
        (
            p.TerminationStatistics("acc/8/1", 300, 120, 2, 1, "established"),
            p.TerminationStatistics("core/8/1", 120, 300, 1, 2),
            p.TerminationStatistics("acc/8/2", 0, 0, 0, 0, "failed"),
            p.TerminationStatistics("core/8/2", 0, 0, 0, 0),
        ),
    )
    return [
        Step("alg->agw", "Reserve (no UE fingerprint yet)", _req(21, ALG_MID, reserve), reserve),
        Step("agw->alg", "reserved", _rep(21, AGW_MID, reserve, reserved), reserve, reserved),
        Step(
            "alg->agw",
            "Configure with UE-B's answer: establish TLS",
            _req(22, ALG_MID, configure),
            configure,
        ),
        Step(
            "agw->alg",
            "configured",
            _rep(22, AGW_MID, configure, configured),
            configure,
            configured,
        ),
        Step("agw->alg", "TLS failure: fingerprint mismatch", _req(3, AGW_MID, failure), failure),
        Step(
            "alg->agw",
            "acknowledged",
            _rep(3, ALG_MID, failure, p.NotifyReply()),
            failure,
            p.NotifyReply(),
        ),
        Step("alg->agw", "Release the whole context", _req(23, ALG_MID, release), release),
        Step("agw->alg", "released", _rep(23, AGW_MID, release, released), release, released),
    ]


def errors_and_shutdown() -> list[Step]:
    reserve = originating()[0].request
    assert isinstance(reserve, p.ReserveRequest)
    forced = p.ServiceChangeRequest("forced")
    return [
        Step("alg->agw", "Reserve", _req(31, ALG_MID, reserve), reserve),
        Step(
            "agw->alg", "still working on it (Pending)", Message(AGW_MID, (TransactionPending(31),))
        ),
        Step(
            "agw->alg",
            "refused: port range exhausted",
            Message(
                AGW_MID,
                (
                    TransactionReply(
                        31, error=ErrorDescriptor(510, "Insufficient resources: no free port")
                    ),
                ),
            ),
        ),
        Step(
            "agw->alg",
            "a Modify for an unknown termination refused",
            Message(
                AGW_MID,
                (
                    TransactionReply(
                        32,
                        (Action(7, error=ErrorDescriptor(430, "Unknown TerminationID acc/9/1")),),
                    ),
                ),
            ),
        ),
        Step(
            "alg->agw",
            "garbage answered at message level",
            Message(ALG_MID, error=ErrorDescriptor(400, "Syntax error in message")),
        ),
        Step("agw->alg", "AGW shuts down", _req(4, AGW_MID, forced), forced),
        Step(
            "alg->agw",
            "acknowledged",
            _rep(4, ALG_MID, forced, p.ServiceChangeReply()),
            forced,
            p.ServiceChangeReply(),
        ),
    ]


def all_steps() -> list[Step]:
    return registration() + originating() + terminating() + errors_and_shutdown()
