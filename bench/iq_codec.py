"""Benchmark: Iq (H.248 text) decode and encode, in µs per message.

Two sets of messages: the 25 of iq/samples.py, and the six round trips of a call (the Reserve,
Configure and Release requests and replies of ``samples.originating()``, as the P-CSCF and the
AGW exchange them under bench/cps.py).

- decode: ``codec.decode(bytes)`` and then what the profile makes of it (``decode_request``
  for a request, ``reply_error`` + ``decode_reply`` for a reply);
- encode: ``profile.encode_request`` / ``encode_reply`` and ``codec.encode``.

Nothing in iq.codec or iq.profile keeps a result keyed on the input, so a repeated message costs
what a fresh one does. Each measurement runs ``--rounds`` rounds of about ``--seconds`` of
process CPU time (time.process_time: other work on a shared machine disturbs it less than the
wall clock) and prints the median round. It asserts nothing.

Usage: ``python bench/iq_codec.py [--seconds S] [--rounds N]``
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from iq import profile as p  # noqa: E402
from iq import samples  # noqa: E402
from iq.codec import (  # noqa: E402
    Message,
    TransactionReply,
    TransactionRequest,
    decode,
    encode,
)

CALL_TITLES = (
    "Reserve AGW connection point",
    "reserved",
    "Configure from the core's answer",
    "configured",
    "Release",
    "released, with statistics",
)


def _decoder(step: samples.Step) -> Callable[[bytes], object]:
    request, reply = step.request, step.reply

    if request is not None and reply is None:

        def run(data: bytes) -> object:
            message = decode(data)
            t = message.transactions[0]
            assert isinstance(t, TransactionRequest)
            return p.decode_request(t.actions)

        return run
    if request is not None:

        def run_reply(data: bytes) -> object:
            message = decode(data)
            t = message.transactions[0]
            assert isinstance(t, TransactionReply)
            p.reply_error(t.actions, t.error)
            return p.decode_reply(request, t.actions)

        return run_reply
    return decode


def _encoder(step: samples.Step) -> Callable[[], bytes]:
    request, reply, message = step.request, step.reply, step.message

    if request is not None and reply is None:
        t = message.transactions[0]

        def run() -> bytes:
            actions = p.encode_request(request)
            return encode(Message(message.mid, (TransactionRequest(t.transaction_id, actions),)))

        return run
    if request is not None and reply is not None:
        t = message.transactions[0]

        def run_reply() -> bytes:
            actions = p.encode_reply(request, reply)
            return encode(Message(message.mid, (TransactionReply(t.transaction_id, actions),)))

        return run_reply
    return lambda: encode(message)


def _rate(jobs: list[Callable[[], object]], seconds: float, rounds: int) -> float:
    """Median µs per job over ``rounds`` rounds of about ``seconds`` each."""
    start = time.process_time()
    for job in jobs:
        job()
    once = max(time.process_time() - start, 1e-6)
    loops = max(1, int(seconds / once))
    results: list[float] = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(loops):
            for job in jobs:
                job()
        results.append((time.process_time() - start) / (loops * len(jobs)) * 1e6)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (the median is printed)")
    args = parser.parse_args()
    all_steps = samples.all_steps()
    call_steps = [s for s in samples.originating() if s.title in CALL_TITLES]
    assert len(call_steps) == len(CALL_TITLES)
    for name, steps in (("samples", all_steps), ("call", call_steps)):
        wire = [encode(s.message) for s in steps]
        size = sum(len(w) for w in wire) / len(wire)
        decoders = [_decoder(s) for s in steps]
        decode_jobs: list[Callable[[], object]] = [
            functools.partial(d, w) for d, w in zip(decoders, wire, strict=True)
        ]
        codec_jobs: list[Callable[[], object]] = [functools.partial(decode, w) for w in wire]
        encode_jobs: list[Callable[[], object]] = [_encoder(s) for s in steps]
        codec_encode: list[Callable[[], object]] = [
            functools.partial(encode, s.message) for s in steps
        ]
        for job, w in zip(encode_jobs, wire, strict=True):
            assert job() == w
        print(f"{name}: {len(steps)} messages, {size:.0f} bytes on average")
        for label, jobs in (
            ("decode (codec + profile)", decode_jobs),
            ("decode (codec only)", codec_jobs),
            ("encode (profile + codec)", encode_jobs),
            ("encode (codec only)", codec_encode),
        ):
            print(f"  {label:26s} {_rate(jobs, args.seconds, args.rounds):7.1f} µs/message")


if __name__ == "__main__":
    main()
