"""Benchmark: e2ae SDP rewrites per second against sdp-transform's parse+serialise.

For each SDP (a typical MSRP + audio offer from a UE, and a 20-stream offer) it measures, in
the same run:

- the full ``orig-offer`` rewrite in Python: parse the bytes, plan, reserve (the offline
  allocation), rewrite, serialise to bytes;
- our parse + serialise alone;
- the npm package ``sdp-transform`` (``write(parse(sdp))``) in node on the same text.

It prints the rates, the ratio "full rewrite / sdp-transform parse+write" and the ratio "our
parse+serialise / sdp-transform parse+write". Nothing in pcscf.sdp or pcscf.rewrite keeps a
result keyed on the input, so the repeated input costs what a fresh one does. The three
measurements take turns for ``--rounds`` rounds and each keeps its best round, so that a busy
machine disturbs both sides alike. It asserts nothing. sdp-transform is installed with npm into
``bench/.node/`` (git-ignored) if missing.

Usage: ``python bench/sdp_rewrite.py [--seconds S] [--rounds N]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from certs.fingerprint import Fingerprint  # noqa: E402
from pcscf.policy import Policy  # noqa: E402
from pcscf.rewrite import (  # noqa: E402
    deterministic_reservations,
    plan_offer,
    rewrite_offer,
)
from pcscf.sdp import SessionDescription  # noqa: E402

NODE_DIR = HERE / ".node"
SDP_TRANSFORM_VERSION = "3.0.0"
UE_FP = "sha-256 " + ":".join(f"{i * 7 % 256:02X}" for i in range(32))
AGW_FP = Fingerprint.parse("sha-256 " + ":".join(f"{i * 11 % 256:02X}" for i in range(32)))

HEAD = (
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
    "c=IN IP4 192.0.2.10\r\nt=0 0\r\n"
)


def _msrp(port: int) -> str:
    return (
        f"m=message {port} TCP/TLS/MSRP *\r\n"
        "a=accept-types:message/cpim text/plain\r\n"
        f"a=path:msrps://192.0.2.10:{port}/jshA7we{port};tcp\r\n"
        "a=setup:active\r\n"
        f"a=fingerprint:{UE_FP}\r\n"
        "a=3ge2ae:requested\r\n"
        "a=msrp-cema\r\n"
    )


def _bfcp(port: int) -> str:
    return (
        f"m=application {port} TCP/TLS/BFCP *\r\n"
        "a=floorctrl:c-only\r\na=confid:4321\r\na=userid:1234\r\n"
        f"a=floorid:1 mstrm:{port}\r\na=setup:active\r\na=connection:new\r\n"
        f"a=fingerprint:{UE_FP}\r\na=3ge2ae:requested\r\n"
    )


def _audio(port: int) -> str:
    return (
        f"m=audio {port} RTP/AVP 0 8 96\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\na=sendrecv\r\n"
    )


def _video(port: int) -> str:
    return (
        f"m=video {port} RTP/AVP 99\r\n"
        "a=rtpmap:99 H264/90000\r\na=fmtp:99 profile-level-id=42e01f;packetization-mode=1\r\n"
        "a=sendrecv\r\n"
    )


def typical_offer() -> str:
    return HEAD + _msrp(7394) + _audio(49170)


def twenty_stream_offer() -> str:
    makers = [_msrp, _audio, _bfcp, _video, _msrp]
    return HEAD + "".join(makers[i % len(makers)](10000 + 2 * i) for i in range(20))


def full_rewrite(data: bytes) -> bytes:
    sdp = SessionDescription.parse(data)
    plan = plan_offer("orig-offer", sdp, ("msrp-tls", "bfcp-tls"), POLICY)
    reservations = deterministic_reservations(
        plan,
        access_address="198.51.100.1",
        core_address="203.0.113.1",
        fingerprint=AGW_FP,
        port_base=40000,
    )
    return rewrite_offer(sdp, plan, reservations).sdp.serialise()


def parse_serialise(data: bytes) -> bytes:
    return SessionDescription.parse(data).serialise()


POLICY = Policy()


def rate(func: Callable[[bytes], bytes], data: bytes, seconds: float) -> float:
    """Calls per second of ``func(data)``, measured for about ``seconds``."""
    func(data)
    count = 0
    batch = 100
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            func(data)
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


NODE_SCRIPT = r"""
const t = require('sdp-transform');
const fs = require('fs');
const sdp = fs.readFileSync(process.argv[2], 'utf8');
const seconds = parseFloat(process.argv[3]);
t.write(t.parse(sdp));
let count = 0;
const start = process.hrtime.bigint();
const deadline = start + BigInt(Math.round(seconds * 1e9));
let now = start;
while (now < deadline) {
  for (let i = 0; i < 100; i++) t.write(t.parse(sdp));
  count += 100;
  now = process.hrtime.bigint();
}
console.log(JSON.stringify({rate: count / (Number(now - start) / 1e9)}));
"""


def ensure_sdp_transform() -> Path | None:
    """node_modules dir holding sdp-transform (installed with npm if missing), or None."""
    modules = NODE_DIR / "node_modules"
    if (modules / "sdp-transform").is_dir():
        return modules
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None
    NODE_DIR.mkdir(exist_ok=True)
    subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(NODE_DIR),
            "--no-audit",
            "--no-fund",
            "--no-save",
            f"sdp-transform@{SDP_TRANSFORM_VERSION}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return modules


def node_rate(modules: Path, text: str, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sdp_file = Path(tmp) / "offer.sdp"
        sdp_file.write_text(text)
        script = Path(tmp) / "bench.js"
        script.write_text(NODE_SCRIPT)
        out = subprocess.run(
            ["node", str(script), str(sdp_file), str(seconds)],
            env={"NODE_PATH": str(modules), "PATH": "/usr/bin:/bin:/usr/local/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
    return float(json.loads(out.stdout)["rate"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best one counts")
    args = parser.parse_args()
    modules = ensure_sdp_transform()
    if modules is None:
        print("node/npm not found: sdp-transform figures skipped", file=sys.stderr)
    print(
        f"{'SDP':<22}{'lines':>6}{'e2ae rewrite/s':>16}{'our parse+ser/s':>17}"
        f"{'sdp-transform/s':>17}{'ratio':>8}{'p+s ratio':>10}"
    )
    for name, text in (("MSRP + audio", typical_offer()), ("20 streams", twenty_stream_offer())):
        data = text.encode()
        full = ours = theirs = 0.0
        for _ in range(args.rounds):
            full = max(full, rate(full_rewrite, data, args.seconds))
            ours = max(ours, rate(parse_serialise, data, args.seconds))
            if modules is not None:
                theirs = max(theirs, node_rate(modules, text, args.seconds))
        if modules is None:
            theirs = float("nan")
        print(
            f"{name:<22}{text.count(chr(10)):>6}{full:>16,.0f}{ours:>17,.0f}"
            f"{theirs:>17,.0f}{full / theirs:>7.2f}x{ours / theirs:>9.2f}x"
        )
    print("ratio = full e2ae rewrite (parse, plan, rewrite, serialise) / sdp-transform parse+write")
    print("p+s ratio = our parse+serialise / sdp-transform parse+write")
    return 0


if __name__ == "__main__":
    sys.exit(main())
