"""The Iq link's observers, what the metrics count (docs/metrics.md): the controller tells of
every request it makes (command, result, seconds), the agent of every request it serves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from iq import profile
from iq.errors import (
    InsufficientResources,
    IqTimeout,
    LinkLost,
    LocalIqError,
    NotInService,
    Overloaded,
    RemoteIqError,
    RequestFailed,
)
from iq.link import IqAgent, IqController, command_name, result_name
from tests.conftest import plain_iq, run_cleanups
from tests.iq.test_link import MID, FakeGateway, _reserve_request


def test_result_names_are_bounded() -> None:
    assert result_name(None) == "ok"
    assert result_name(IqTimeout("x")) == "timeout"
    assert result_name(LinkLost("x")) == "link_lost"
    assert result_name(NotInService("x")) == "not_in_service"
    assert result_name(Overloaded("x")) == "overloaded"
    assert result_name(InsufficientResources("x")) == "h248_510"
    assert result_name(RequestFailed("x", code=430)) == "h248_430"
    assert result_name(RemoteIqError("x", code=999)) == "h248_other"
    assert result_name(LocalIqError("x")) == "local_error"
    assert result_name(ValueError("x")) == "error"
    assert command_name(_reserve_request()) == "reserve"
    assert command_name(profile.ReleaseRequest(1)) == "release"
    assert command_name(object()) == "other"


@pytest.fixture
def cleanups() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    run_cleanups(things)


@pytest_twisted.ensureDeferred
async def test_each_request_is_told_to_both_observers(cleanups: list[Any]) -> None:
    made: list[tuple[str, str, float | None]] = []
    served: list[tuple[str, str]] = []
    ctrl = IqController(**plain_iq(MID), observer=lambda *a: made.append(a))
    port = ctrl.listen(0, "127.0.0.1")
    cleanups += [ctrl.stop, port.stopListening]
    gateway = FakeGateway()
    agent = IqAgent(
        gateway,
        "127.0.0.1",
        port.getHost().port,
        mid=MID,
        seed=1,
        observer=lambda *a: served.append(a),
    )
    cleanups.append(agent.stop)
    with pytest.raises(NotInService):
        await ctrl.reserve(MID, _reserve_request())
    assert made == [("reserve", "not_in_service", None)]
    agent.start()
    await agent.when_registered().addTimeout(5, reactor)

    reply = await ctrl.reserve(MID, _reserve_request())
    gateway.refuse = InsufficientResources("no ports")
    with pytest.raises(RequestFailed):
        await ctrl.reserve(MID, _reserve_request())
    await ctrl.release(MID, profile.ReleaseRequest(reply.context))
    assert [m[:2] for m in made[1:]] == [
        ("reserve", "ok"),
        ("reserve", "h248_510"),
        ("release", "ok"),
    ]
    assert all(m[2] is not None and 0 <= m[2] < 5 for m in made[1:])
    assert served == [("reserve", "ok"), ("reserve", "h248_510"), ("release", "ok")]
