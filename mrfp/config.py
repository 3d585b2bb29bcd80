"""The MRFP's configuration (``e2ae mrfp``; docs/mrfp.md)."""

from __future__ import annotations

from pathlib import Path

import attrs

from mrfp.conference import Limits


@attrs.frozen
class MrfpConfig:
    """Where the MRFP's media terminations live and what it holds at most.

    ``media_ip``: the address it listens on and connects from; ``handshake_timeout``: seconds
    from TCP up to a completed TLS handshake (or, for a TLS client, to ``start_tls``);
    ``connect_timeout``: seconds for an active TCP connection; ``max_pending``: connections
    being verified per listening termination; ``max_out_buffer``: bytes queued for a peer that
    does not read before its stream is closed; ``keylog``: an NSS key log file (tests and
    captures only: it holds the TLS secrets)."""

    media_ip: str
    max_conferences: int = 64
    max_terminations: int = 256
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    max_pending: int = 4
    max_out_buffer: int = 4 << 20
    limits: Limits = attrs.Factory(Limits)
    keylog: Path | None = None
