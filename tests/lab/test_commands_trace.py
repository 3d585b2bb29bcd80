"""``e2ae demo --trace DIR`` and ``e2ae trace`` as real processes, on a real demo log."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import run_e2ae

SVG = "{http://www.w3.org/2000/svg}"


def test_demo_trace_then_e2ae_trace_of_one_call(tmp_path: Path) -> None:
    done = run_e2ae(["demo", "--json", "--trace", str(tmp_path)], timeout=180)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    summary = json.loads(done.stdout)
    trace = summary["trace"]
    assert summary["ok"] is True and "calls" in summary  # the summary's keys stay as they were
    assert trace["svg"] == str(tmp_path / "demo.svg") and trace["log"] == str(
        tmp_path / "demo.json"
    )
    assert {"UE alice", "UE bob", "P-CSCF", "AGW", "core", "KMS"} <= set(trace["lanes"])
    ET.fromstring((tmp_path / "demo.svg").read_text())

    call1 = summary["calls"][0]["call_id"]
    out = tmp_path / "call1.svg"
    done = run_e2ae(["trace", str(tmp_path / "demo.json"), "--call-id", call1, "--out", str(out)])
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith(f"trace: {out} (")
    root = ET.fromstring(out.read_text())
    lanes = [t.text for t in root.iter(f"{SVG}text") if t.get("font-weight") == "bold"]
    assert lanes == ["UE alice", "UE bob", "other peer", "P-CSCF", "AGW", "core"]
    titles = [g.find(f"{SVG}title").text or "" for g in root.iter(f"{SVG}g")]
    assert all(f"call_id={call1}" in t for t in titles if "call_id=" in t)
    joined = "\n".join(titles)
    for expected in (
        "sip: INVITE",
        "iq: Add (Reserve)",
        "iq: Notify tls-established",
        "tls: TLS verified acc/",
        "tls: TLS refused acc/",
        "sip: BYE",
    ):
        assert expected in joined, expected

    done = run_e2ae(["trace", str(tmp_path / "demo.json"), "--call-id", "no-such-call"])
    assert done.returncode == 1 and b"nothing to draw" in done.stderr


def test_demo_text_says_where_the_picture_is(tmp_path: Path) -> None:
    done = run_e2ae(["demo", "--trace", str(tmp_path)], timeout=180)
    assert done.returncode == 0
    assert f"call-flow picture: {tmp_path / 'demo.svg'}" in done.stdout.decode()
