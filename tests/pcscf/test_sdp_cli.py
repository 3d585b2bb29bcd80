"""``e2ae sdp rewrite`` as a real process: the README example, the state file, errors."""

from __future__ import annotations

import json
from pathlib import Path

from pcscf.sdp import SessionDescription
from pcscf.sdp_cli import DEFAULT_AGW_FINGERPRINT
from tests.conftest import REPO, run_e2ae

EXAMPLES = REPO / "examples"


def _one_line_error(result: object) -> str:
    stderr = result.stderr.decode()  # type: ignore[attr-defined]
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr


def test_readme_example_offer_then_answer_through_files(tmp_path: Path) -> None:
    state = tmp_path / "call.json"
    offer = run_e2ae(
        ["sdp", "rewrite", "orig-offer", "examples/orig-offer.sdp", "--state", str(state)]
    )
    assert offer.returncode == 0, offer.stderr
    to_core = SessionDescription.parse(offer.stdout)
    assert to_core.media[0].lines[:2] == ["m=message 40002 TCP/MSRP *", "c=IN IP4 203.0.113.1"]
    assert b"fingerprint" not in offer.stdout and b"3ge2ae" not in offer.stdout
    saved = json.loads(state.read_text())
    assert saved["step"] == "orig-offer"
    assert saved["streams"][0]["reservation"]["fingerprint"] == DEFAULT_AGW_FINGERPRINT

    answer = run_e2ae(
        [
            "sdp",
            "rewrite",
            "orig-answer",
            str(EXAMPLES / "orig-answer.sdp"),
            "--state",
            str(state),
            "--json",
        ]
    )
    assert answer.returncode == 0, answer.stderr
    doc = json.loads(answer.stdout)
    to_ue = SessionDescription.parse(doc["sdp"])
    assert to_ue.media[0].proto == "TCP/TLS/MSRP" and to_ue.media[0].port == 40001
    assert to_ue.media[0].attribute_values("fingerprint") == [DEFAULT_AGW_FINGERPRINT]
    assert doc["streams"][0]["treatment"] == "e2ae"


def test_options_change_the_output(tmp_path: Path) -> None:
    data = (EXAMPLES / "orig-offer.sdp").read_bytes()
    result = run_e2ae(
        [
            "sdp",
            "rewrite",
            "orig-offer",
            "-",
            "--agw-core",
            "2001:db8::c",
            "--port-base",
            "50000",
            "--json",
        ],
        input=data,
    )
    assert result.returncode == 0, result.stderr
    sdp = SessionDescription.parse(json.loads(result.stdout)["sdp"])
    assert sdp.media[0].lines[:2] == ["m=message 50002 TCP/MSRP *", "c=IN IP6 2001:db8::c"]
    none = run_e2ae(["sdp", "rewrite", "orig-offer", "--ue-mechanisms", ""], input=data)
    assert none.returncode == 0
    assert none.stdout == SessionDescription.parse(data).serialise()


def test_malformed_sdp_one_line_nothing_on_stdout() -> None:
    bad = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nm=message 7394\r\n"
    result = run_e2ae(["sdp", "rewrite", "orig-offer", "-"], input=bad)
    assert result.returncode == 1
    assert result.stdout == b""
    line = _one_line_error(result)
    assert line.startswith("e2ae sdp rewrite: stdin: line 4: m= needs")


def test_answer_without_state_is_a_usage_error() -> None:
    result = run_e2ae(["sdp", "rewrite", "orig-answer", str(EXAMPLES / "orig-answer.sdp")])
    assert result.returncode == 2 and result.stdout == b""
    assert "--state" in _one_line_error(result)


def test_bad_values_are_one_line_errors(tmp_path: Path) -> None:
    example = str(EXAMPLES / "orig-offer.sdp")
    for extra in (
        ["--agw-fingerprint", "md5 00:11"],
        ["--agw-access", "not-an-ip"],
        ["--port-base", "65534"],
        ["--ue-mechanisms", "msrp-tls,bogus"],
        ["--state", str(tmp_path / "missing" / "dir" / "x.json")],
    ):
        result = run_e2ae(["sdp", "rewrite", "orig-offer", example, *extra])
        assert result.returncode == 2, extra
        assert result.stdout == b""
        _one_line_error(result)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{}")
    result = run_e2ae(
        [
            "sdp",
            "rewrite",
            "orig-answer",
            str(EXAMPLES / "orig-answer.sdp"),
            "--state",
            str(garbage),
        ]
    )
    assert result.returncode == 2 and result.stdout == b""
    _one_line_error(result)


def test_unreadable_inputs_say_which(tmp_path: Path) -> None:
    example = str(EXAMPLES / "orig-offer.sdp")
    bad_policy = tmp_path / "policy.toml"
    bad_policy.write_text("[e2ae]\nno_such_knob = 1\n")
    cases = [
        (["orig-offer", str(tmp_path / "absent.sdp")], "cannot read "),
        (["orig-answer", example, "--state", str(tmp_path / "absent.json")], "cannot read state"),
        (["orig-offer", example, "--policy", str(bad_policy)], "no_such_knob"),
    ]
    for argv, words in cases:
        result = run_e2ae(["sdp", "rewrite", *argv])
        assert result.returncode == 2 and result.stdout == b"", argv
        assert words in _one_line_error(result), argv
