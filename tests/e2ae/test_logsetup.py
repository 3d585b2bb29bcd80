from __future__ import annotations

import io
import json
from pathlib import Path

from twisted.logger import Logger, LogPublisher

from e2ae.logsetup import observers


def test_json_trace_keeps_named_fields(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    text = io.StringIO()
    publisher = LogPublisher(*observers(level="info", text=text, json_path=trace))
    log = Logger(namespace="accessgw.test", observer=publisher)
    log.info(
        "TLS verified on {termination} from {peer}",
        call_id="c1@x",
        termination="acc/1",
        peer="127.0.0.1:5000",
    )
    log.debug("hidden {call_id}", call_id="c1@x")
    events = [json.loads(line.strip("\x1e")) for line in trace.read_text().splitlines() if line]
    assert len(events) == 1
    assert events[0]["call_id"] == "c1@x"
    assert events[0]["termination"] == "acc/1"
    assert "TLS verified on acc/1 from 127.0.0.1:5000" in text.getvalue()
    assert "hidden" not in text.getvalue()
