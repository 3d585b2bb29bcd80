"""Iq link configuration shared by the P-CSCF and AGW command lines (no Twisted import).

``add_arguments(parser)`` adds the Iq options to a subcommand; ``tls_from_args(args)`` and
``faults_from_args(args)`` turn them into an :class:`IqTlsConfig` / :class:`FaultPlan`::

    --iq-tls [PREFIX]          mutual-certificate TLS on Iq (required unless --iq-insecure); with
                               PREFIX, the certificate and key are PREFIX.crt and PREFIX.key
    --iq-insecure              plain TCP on Iq instead: no peer is authenticated (an explicit,
                               logged opt-in for lab set-ups and plain-text captures)
    --iq-cert FILE --iq-key FILE
                               this end's certificate and key (PEM), instead of a PREFIX
    --iq-peer 'HASH HEX'       pinned fingerprint of an accepted peer (repeat for several)
    --iq-keylog FILE           NSS key log of the Iq TLS sessions (for Wireshark)
    --iq-timeout SECONDS       per-request timeout (default 5)
    --iq-faults SPEC           fault injection: seed=N,delay=S,drop=R,dup=R,disconnect-after=N
"""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs
from OpenSSL import SSL

from certs.errors import CertsError, LocalCertsError
from certs.fingerprint import Fingerprint
from certs.generate import CertAndKey, load_pair
from certs.tls import KeyLogWriter, make_context
from e2ae.tcpmedia import TlsRole
from iq.errors import LocalIqError
from iq.transactions import FaultPlan


@attrs.frozen
class IqTlsConfig:
    """Mutual-certificate TLS on Iq: our identity and the pinned fingerprints of the peers we
    accept (the ALG pins its AGWs' certificates, an AGW pins the ALG's)."""

    identity: CertAndKey
    peer_fingerprints: tuple[Fingerprint, ...]
    keylog: Path | None = None

    def __attrs_post_init__(self) -> None:
        if not self.peer_fingerprints:
            raise LocalIqError("Iq over TLS needs at least one pinned peer fingerprint")

    def context(self, role: TlsRole) -> SSL.Context:
        keylog = KeyLogWriter(self.keylog) if self.keylog is not None else None
        return make_context(self.identity, role, keylog=keylog)

    @classmethod
    def from_files(
        cls, cert: Path, key: Path, peers: list[str], keylog: Path | None = None
    ) -> IqTlsConfig:
        """Load a PEM certificate and key; ``peers`` are ``"sha-256 AB:..."`` strings."""
        try:
            identity = load_pair(cert, key)
        except LocalCertsError as exc:
            raise LocalIqError(f"Iq: {exc}") from exc
        try:
            pinned = tuple(Fingerprint.parse(p) for p in peers)
        except CertsError as exc:
            raise LocalIqError(f"bad --iq-peer fingerprint: {exc}") from exc
        return cls(identity, pinned, keylog)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Iq link")
    group.add_argument(
        "--iq-tls",
        nargs="?",
        const=True,
        default=None,
        metavar="PREFIX",
        help="mutual-certificate TLS on Iq; PREFIX.crt and PREFIX.key, or --iq-cert/--iq-key",
    )
    group.add_argument("--iq-cert", type=Path, metavar="FILE", help="Iq certificate (PEM)")
    group.add_argument("--iq-key", type=Path, metavar="FILE", help="Iq private key (PEM)")
    group.add_argument(
        "--iq-peer",
        action="append",
        default=[],
        metavar="'HASH HEX'",
        help="pinned fingerprint of an accepted Iq peer (repeatable)",
    )
    group.add_argument(
        "--iq-insecure",
        action="store_true",
        help="plain TCP on Iq (no peer authenticated; explicit opt-in, logged)",
    )
    group.add_argument("--iq-keylog", type=Path, metavar="FILE", help="NSS key log for Iq TLS")
    group.add_argument(
        "--iq-timeout", type=float, default=5.0, metavar="SECONDS", help="Iq request timeout"
    )
    group.add_argument(
        "--iq-faults",
        default="",
        metavar="SPEC",
        help="fault injection, e.g. seed=1,delay=0.05,drop=0.1,dup=0.1,disconnect-after=50",
    )


def tls_from_args(args: argparse.Namespace) -> IqTlsConfig | None:
    """The TLS configuration, or ``None`` for plain TCP, which needs ``--iq-insecure``."""
    if args.iq_tls and args.iq_insecure:
        raise LocalIqError("--iq-tls and --iq-insecure exclude each other")
    if not args.iq_tls:
        if not args.iq_insecure:
            raise LocalIqError(
                "Iq is authenticated: give --iq-tls PREFIX and --iq-peer 'HASH HEX' (the ALG's"
                " pinned fingerprint), or --iq-insecure for plain TCP"
            )
        return None
    cert, key = args.iq_cert, args.iq_key
    if isinstance(args.iq_tls, str):
        cert = cert or Path(args.iq_tls + ".crt")
        key = key or Path(args.iq_tls + ".key")
    if cert is None or key is None or not args.iq_peer:
        raise LocalIqError(
            "--iq-tls needs PREFIX (or --iq-cert and --iq-key) and at least one --iq-peer"
        )
    return IqTlsConfig.from_files(cert, key, list(args.iq_peer), args.iq_keylog)


def faults_from_args(args: argparse.Namespace) -> FaultPlan | None:
    return FaultPlan.parse(args.iq_faults) if args.iq_faults else None
