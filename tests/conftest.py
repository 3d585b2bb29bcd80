"""Shared test helpers.

Real peers (openssl, tshark, sipp, stunnel, haproxy) come from Debian packages that
``.ci/run`` installs. Where one is missing a test that needs it is skipped on a developer's
machine, but fails under CI (``CI`` set), so that a missing install step cannot hide behind a
green run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent

# Property tests judge behaviour, never speed: no per-example deadline, and no health check that
# fails a test because a shared machine was slow to generate data.
settings.register_profile(
    "e2ae",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("e2ae")


def require_tool(name: str) -> str:
    """Path of an external tool, or skip (fail under CI) if it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def e2ae_command() -> list[str]:
    """The ``e2ae`` CLI as a separate process, run from this checkout."""
    return [sys.executable, "-m", "lab.cli"]


def run_e2ae(
    args: Sequence[str],
    *,
    input: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``e2ae ARGS`` as a real process and capture its output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [*e2ae_command(), *args],
        input=input,
        capture_output=True,
        cwd=cwd or REPO,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Things to undo after the test (callables), last first, each waited for if it returns
    a Deferred. A test or fixture appends to the list as it sets things up."""
    import pytest_twisted
    from twisted.internet import defer

    things: list[Any] = []
    yield things
    for thing in reversed(things):
        pytest_twisted.blockon(defer.maybeDeferred(thing))


def run_cleanups(cleanups: Sequence[Callable[[], object]]) -> None:
    """Undo a test's set-up, last first, from a fixture: waits for every Deferred a cleanup
    returns (stopping links, ports), then one more reactor turn for the sockets to close."""
    import pytest_twisted
    from twisted.internet import defer, reactor, task

    waits = []
    for cleanup in reversed(cleanups):
        result = cleanup()
        if isinstance(result, defer.Deferred):
            waits.append(result)
    pytest_twisted.blockon(defer.DeferredList(waits))
    pytest_twisted.blockon(task.deferLater(reactor, 0.05, lambda: None))


def plain_iq(*mids: str) -> dict[str, object]:
    """IqController keywords for plain-TCP Iq on loopback: the explicit insecure opt-in, and an
    allow-list that admits ``mids`` from 127.0.0.1 only."""
    return {"insecure": True, "allow": [f"{mid}@127.0.0.1" for mid in mids]}
