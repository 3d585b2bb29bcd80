"""What the lab's user agents put in and read from SDP (pure: no I/O, no Twisted).

- :func:`render`: an SDP body from :class:`LocalStream` values (the UE's offer or answer, the
  core peer's answer). A UE asking for e2ae marks each MSRP/BFCP stream ``a=3ge2ae:requested``
  and gives its own certificate's fingerprint at media level.
- :func:`read_streams`: the MSRP/BFCP streams of a received SDP as :class:`RemoteStream`
  (address from ``c=``/``m=`` as CEMA wants, ``a=setup``, fingerprints, ``a=path``, BFCP ids).
- :func:`answer_setup` / :func:`connects`: the TCP (and TLS) role rules of RFC 4145.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from certs.fingerprint import Fingerprint
from pcscf.sdp import MediaSection, SessionDescription

Kind = Literal["msrp", "bfcp"]
Setup = Literal["active", "passive", "actpass", "holdconn"]

#: Proto of each stream kind, plain (core) and over TLS (UE).
PROTOS: dict[Kind, tuple[str, str]] = {
    "msrp": ("TCP/MSRP", "TCP/TLS/MSRP"),
    "bfcp": ("TCP/BFCP", "TCP/TLS/BFCP"),
}
MEDIA: dict[Kind, str] = {"msrp": "message", "bfcp": "application"}
#: Port an active endpoint puts in its m= line (RFC 4145 section 4: it does not listen).
DISCARD_PORT = 9


class ScenarioError(ValueError):
    """A received SDP the lab cannot use (names the stream and the problem)."""

    def __init__(self, reason: str, *, where: str = "", value: object = None) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.where = where
        self.value = value


@attrs.frozen
class LocalStream:
    """One stream of an SDP this side sends."""

    kind: Kind
    port: int
    setup: Setup
    tls: bool
    path: str | None = None  # MSRP: our a=path URI
    floorctrl: str | None = None  # BFCP: c-only, s-only, c-s
    confid: int | None = None
    userid: int | None = None
    floorid: int | None = None
    rejected: bool = False

    @property
    def proto(self) -> str:
        return PROTOS[self.kind][1 if self.tls else 0]


@attrs.frozen
class RemoteStream:
    """One MSRP or BFCP stream of a received SDP."""

    index: int
    kind: Kind
    proto: str
    host: str
    port: int
    setup: Setup
    fingerprints: tuple[Fingerprint, ...]
    path: tuple[str, ...] = ()
    floorctrl: str | None = None
    confid: int | None = None
    userid: int | None = None
    floorids: tuple[int, ...] = ()
    e2ae: str | None = None

    @property
    def tls(self) -> bool:
        return "/TLS/" in self.proto

    @property
    def rejected(self) -> bool:
        return self.port == 0


def render(
    host: str,
    streams: Sequence[LocalStream],
    *,
    fingerprint: Fingerprint | None = None,
    e2ae_requested: bool = False,
    session_id: int = 1,
    version: int = 1,
    user: str = "-",
) -> bytes:
    """An SDP body with one m= line per stream, in order."""
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o={user} {session_id} {version} IN {family} {host}",
        "s=-",
        f"c=IN {family} {host}",
        "t=0 0",
    ]
    for s in streams:
        lines.append(f"m={MEDIA[s.kind]} {0 if s.rejected else s.port} {s.proto} *")
        if s.rejected:
            continue
        if s.kind == "msrp":
            lines.append("a=accept-types:text/plain message/cpim")
            if s.path is not None:
                lines.append(f"a=path:{s.path}")
            lines.append("a=msrp-cema")
        else:
            lines.append(f"a=floorctrl:{s.floorctrl or 'c-only'}")
            if s.confid is not None:
                lines.append(f"a=confid:{s.confid}")
            if s.userid is not None:
                lines.append(f"a=userid:{s.userid}")
            if s.floorid is not None:
                lines.append(f"a=floorid:{s.floorid} mstrm:1")
        lines.append(f"a=setup:{s.setup}")
        lines.append("a=connection:new")
        if s.tls and fingerprint is not None:
            lines.append(fingerprint.attribute())
        if s.tls and e2ae_requested:
            lines.append("a=3ge2ae:requested")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _kind_of(proto: str) -> Kind | None:
    upper = proto.upper()
    if upper.endswith("/MSRP"):
        return "msrp"
    if upper.endswith("/BFCP"):
        return "bfcp"
    return None


def _one(section: MediaSection, name: str) -> str | None:
    values = section.attribute_values(name)
    return values[0] if values else None


def _int(value: str | None, where: str) -> int | None:
    if value is None:
        return None
    text = value.strip().split()[0] if value.strip() else ""
    if not text.isdigit():
        raise ScenarioError("not a number", where=where, value=value)
    return int(text)


def read_streams(body: bytes) -> list[RemoteStream]:
    """The MSRP and BFCP streams of ``body`` (other streams are skipped)."""
    sdp = SessionDescription.parse(body)
    out: list[RemoteStream] = []
    for index, m in enumerate(sdp.media):
        kind = _kind_of(m.proto)
        if kind is None:
            continue
        where = f"stream {index} ({m.media} {m.proto})"
        conn = sdp.effective_connection(index)
        if conn is None and m.port != 0:
            raise ScenarioError("no c= line", where=where)
        setups = sdp.effective_attribute_values(index, "setup")
        setup = setups[0].strip().lower() if setups else "active"
        if setup not in ("active", "passive", "actpass", "holdconn"):
            raise ScenarioError("bad a=setup", where=where, value=setup)
        first = m.attribute_values

        paths = " ".join(first("path")).split()
        e2ae = first("3ge2ae")
        out.append(
            RemoteStream(
                index=index,
                kind=kind,
                proto=m.proto,
                host=conn.host if conn is not None else "",
                port=m.port,
                setup=setup,  # type: ignore[arg-type]
                fingerprints=tuple(sdp.effective_fingerprints(index)),
                path=tuple(paths),
                floorctrl=_one(m, "floorctrl"),
                confid=_int(_one(m, "confid"), where + " a=confid"),
                userid=_int(_one(m, "userid"), where + " a=userid"),
                floorids=tuple(
                    n for v in first("floorid") if (n := _int(v, where + " a=floorid")) is not None
                ),
                e2ae=e2ae[0].strip() if e2ae else None,
            )
        )
    return out


def answer_setup(offer: Setup) -> Setup:
    """Our ``a=setup`` in an answer (RFC 4145): active <-> passive; actpass -> active."""
    return "passive" if offer == "active" else "active"


def connects(setup: Setup) -> bool:
    """Whether the side with this ``a=setup`` opens the TCP connection (and is TLS client)."""
    return setup == "active"
