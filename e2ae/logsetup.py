"""Log observers for every e2ae service: readable text on stderr and, when asked, a JSON trace.

Every element logs with :class:`twisted.logger.Logger` and named fields (``call_id``,
``stream``, ``iq_context``, ``termination``, ``peer``, ``fingerprint``). The JSON trace (one
event per line, ``twisted.logger.eventAsJSON``) keeps those fields, so one call can be followed
across the P-CSCF, Iq and the AGW with ``jq 'select(.call_id == "...")'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    jsonFileLogObserver,
    textFileLogObserver,
)

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}

#: The lowest level any observer of :func:`start_logging` keeps (``None``: logging was not
#: started here, e.g. in tests that watch the log publisher: every event is emitted).
_threshold: LogLevel | None = None


def enabled(level: LogLevel) -> bool:
    """Whether an event at ``level`` reaches an observer of :func:`start_logging`. Hot paths
    ask first: an event below the level is otherwise built, published and filtered out (a
    few microseconds, several times per SIP message)."""
    return _threshold is None or level >= _threshold


def observers(
    *,
    level: str = "info",
    text: IO[str] | None = None,
    json_path: Path | None = None,
) -> list[ILogObserver]:
    """Observers for a service: text to ``text`` (stderr by default) and an optional JSON file."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    out: list[ILogObserver] = [
        FilteringLogObserver(textFileLogObserver(text or sys.stderr), [predicate])
    ]
    if json_path is not None:
        json_file: IO[str] = json_path.open("a", encoding="utf-8", buffering=1)  # line-buffered
        out.append(FilteringLogObserver(jsonFileLogObserver(json_file), [predicate]))
    return out


def start_logging(
    *,
    level: str = "info",
    text: IO[str] | None = None,
    json_path: Path | None = None,
) -> None:
    """Begin logging to the observers above (once per process)."""
    global _threshold
    _threshold = LEVELS[level]
    globalLogBeginner.beginLoggingTo(
        observers(level=level, text=text, json_path=json_path),
        redirectStandardIO=False,
    )


def add_log_options(parser: argparse.ArgumentParser, *, level: str = "info") -> None:
    """The one ``--log-level`` / ``--log-json`` option set of every service command."""
    parser.add_argument("--log-level", choices=tuple(LEVELS), default=level)
    parser.add_argument("--log-json", metavar="FILE", type=Path, help="JSON trace file")
