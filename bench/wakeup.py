"""Benchmark: what a sleep and a wake-up cost a process on this machine, in CPU time.

A service under a light load sleeps in ``epoll_wait`` between messages and wakes for each one;
under a heavy load it finds the next message waiting and does not sleep. On a virtual machine
the two can differ a lot: the kernel and the hypervisor charge CPU to the process for every
sleep and wake-up, and the work right after a wake-up runs slower (cold caches and TLB). That
is why the CPU per call that ``bench/cps.py --cpu`` prints falls as the rate rises, for SIPp as
much as for the P-CSCF (docs/performance.md, "Sustained load").

This measures, in one run, with ``time.process_time()`` (the process's user + system CPU):

- the CPU of one ``time.sleep(gap)`` and its wake-up, with nothing else to do;
- the CPU of one unit of work (the full e2ae rewrite of the MSRP + audio offer of
  ``bench/sdp_rewrite.py``) done back to back, and done once after each sleep; the ratio of the
  two is what waking up for each message costs that work.

Usage: ``python bench/wakeup.py [--seconds 2] [--gaps 0.2,1,5]`` (gaps in milliseconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from cps import machine  # noqa: E402
from sdp_rewrite import full_rewrite, typical_offer  # noqa: E402


def cpu_per_round(
    work: Callable[[], object] | None, gap: float, seconds: float
) -> tuple[float, int]:
    """CPU seconds per round of ``work`` (None: nothing) followed by ``time.sleep(gap)`` (0: no
    sleep), over about ``seconds`` of wall time; and the number of rounds."""
    rounds = 0
    cpu = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if work is not None:
            work()
        if gap:
            time.sleep(gap)
        rounds += 1
    return (time.process_time() - cpu) / max(rounds, 1), rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="wall time per measurement")
    parser.add_argument(
        "--gaps", default="0.2,1,5", help="sleep lengths to try, milliseconds, comma-separated"
    )
    args = parser.parse_args(argv)
    try:
        gaps = [float(text) / 1000 for text in args.gaps.split(",") if text.strip()]
    except ValueError:
        parser.error(f"--gaps must be numbers, not {args.gaps!r}")
    if not gaps or min(gaps) <= 0 or args.seconds <= 0:
        parser.error("--gaps and --seconds must be positive")
    data = typical_offer().encode()

    def unit() -> object:
        return full_rewrite(data)

    for _ in range(500):  # warm up: imports, caches, the regexes compiled
        unit()
    print(f"machine: {machine()}")
    tight, count = cpu_per_round(unit, 0.0, args.seconds)
    print(f"work back to back: {tight * 1e6:8.1f} us CPU per unit ({count} units)")
    print(f"{'sleep':>8} {'sleep+wake alone':>18} {'unit after a sleep':>20} {'ratio':>7}")
    for gap in gaps:
        alone, _ = cpu_per_round(None, gap, args.seconds)
        after, _ = cpu_per_round(unit, gap, args.seconds)
        ratio = (after - alone) / tight if tight else 0.0
        print(
            f"{gap * 1000:6.1f}ms {alone * 1e6:15.1f} us {(after - alone) * 1e6:17.1f} us "
            f"{ratio:6.2f}x"
        )
    print("unit after a sleep = CPU of (unit + sleep) less the sleep alone;")
    print("ratio = that / the unit back to back (1.00x: waking up costs the work nothing)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
