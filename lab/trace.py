"""``e2ae trace``: the JSON logs of a run as a sequence diagram (SVG), with no Twisted.

Input: the events of ``--log-json`` files (``twisted.logger.eventAsJSON``, one per line, each
line possibly led by the record separator ``\\x1e``). Output: lanes UE(s) / P-CSCF / AGW /
core (and KMS, and "other peer" when a stranger tried a TLS leg) and one arrow per

- SIP message, from the UE's and the core stub's own ``lab.sip`` events (each hop is logged by
  the UE or the core at its end; their SIP peer is the P-CSCF): method or status, call id;
- Iq transaction: the P-CSCF's request (``Iq ReserveRequest to agw1``, at debug level), the
  AGW's reply (``Iq reserved/released ... in context``), the AGW's Notify as the P-CSCF got it:
  H.248 command and ``iq_context``;
- TLS event of an access leg: the AGW's ``TLS established`` / ``TLS refused`` on a termination,
  the UE's check of the AGW; TLS-PSK between two UEs; the KMS's answers.

Events are tied to a call by ``call_id``, or by ``iq_context`` (and ``termination``) through
the events that name both. :func:`build` makes the model, :func:`render_svg` the picture.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from xml.sax.saxutils import escape

import attrs

Kind = Literal["sip", "iq", "tls", "kms", "note"]

PCSCF = "P-CSCF"
AGW = "AGW"
CORE = "core"
KMS = "KMS"
OTHER = "other peer"

#: H.248 command of each Iq request type (docs/iq-profile.md).
COMMANDS = {
    "ReserveRequest": "Add",
    "ConfigureRequest": "Modify",
    "ReleaseRequest": "Subtract",
}

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


@attrs.frozen
class Arrow:
    """One message or event: from lane ``source`` to lane ``target`` (equal for a note)."""

    time: float
    source: str
    target: str
    label: str
    kind: Kind
    call_id: str | None = None
    iq_context: str | None = None
    ok: bool = True
    detail: str = ""


@attrs.frozen
class Diagram:
    lanes: tuple[str, ...]
    arrows: tuple[Arrow, ...]


def read_events(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The events of a JSON log (blank and unreadable lines skipped)."""
    events: list[dict[str, Any]] = []
    for line in lines:
        for part in line.split("\x1e"):
            part = part.strip()
            if not part:
                continue
            try:
                value = json.loads(part)
            except ValueError:
                continue
            if isinstance(value, dict):
                events.append(value)
    return events


def _s(value: object) -> str | None:
    return None if value is None or value == "None" else str(value)


def _port(address: object) -> str | None:
    text = _s(address)
    return None if text is None else text.rpartition(":")[2]


def _level(event: Mapping[str, Any]) -> str:
    level = event.get("log_level")
    return str(level.get("name")) if isinstance(level, dict) else str(level or "info")


@attrs.define
class _Index:
    """What the events say about calls: context -> call, termination -> context, who calls."""

    context_call: dict[str, str] = attrs.field(factory=dict)
    term_context: dict[str, str] = attrs.field(factory=dict)
    access_port_term: dict[str, str] = attrs.field(factory=dict)
    callers: dict[str, str] = attrs.field(factory=dict)
    callees: dict[str, str] = attrs.field(factory=dict)
    contexts: dict[str, list[str]] = attrs.field(factory=dict)

    def call_of(self, event: Mapping[str, Any]) -> str | None:
        call = _s(event.get("call_id"))
        if call is not None:
            return call
        context = self.context_of(event)
        return None if context is None else self.context_call.get(context)

    def context_of(self, event: Mapping[str, Any]) -> str | None:
        context = _s(event.get("iq_context"))
        if context is None:
            term = _s(event.get("termination"))
            context = None if term is None else self.term_context.get(term)
        return context

    def ue_of_context(self, context: str | None) -> str:
        call = None if context is None else self.context_call.get(context)
        if call is None or context is None:
            return "UE"
        order = self.contexts.get(call, [])
        sides = [u for u in (self.callers.get(call), self.callees.get(call)) if u is not None]
        if call not in self.callers:
            sides = [self.callees.get(call, "UE")]
        index = order.index(context) if context in order else 0
        return sides[index] if index < len(sides) else "UE"


def _index(events: list[dict[str, Any]]) -> _Index:
    idx = _Index()
    for e in events:
        ns = str(e.get("log_namespace", ""))
        call, context, term = (
            _s(e.get("call_id")),
            _s(e.get("iq_context")),
            _s(e.get("termination")),
        )
        if call is not None and context is not None:
            idx.context_call.setdefault(context, call)
            order = idx.contexts.setdefault(call, [])
            if context not in order:
                order.append(context)
        if term is not None and context is not None:
            idx.term_context.setdefault(term, context)
        if ns == "accessgw" and term is not None and e.get("access_port"):
            idx.access_port_term[str(e["access_port"])] = term
        if ns == "lab.sip" and call is not None and str(e.get("node", "")).startswith("UE "):
            summary = str(e.get("summary", ""))
            if summary.startswith("INVITE "):
                side = idx.callers if e.get("direction") == "out" else idx.callees
                side.setdefault(call, str(e["node"]))
    return idx


def _sip_label(summary: str) -> str:
    head = summary.split(" [", 1)[0]
    first = head.split(" ", 1)[0]
    if first.isdigit():
        return head  # "200 OK (INVITE)"
    sdp = " +SDP" if "[SDP" in summary else ""
    return first + sdp


def _arrows(e: dict[str, Any], idx: _Index, t: float) -> list[Arrow]:
    ns = str(e.get("log_namespace", ""))
    fmt = str(e.get("log_format") or "")
    call = idx.call_of(e)
    context = idx.context_of(e)

    def arrow(source: str, target: str, label: str, kind: Kind, ok: bool = True) -> Arrow:
        return Arrow(t, source, target, label, kind, call, context, ok, _detail(e))

    if ns == "lab.sip" and "summary" in e:
        node = str(e.get("node", ""))
        lane = CORE if node == "core" else node
        label = _sip_label(str(e["summary"])) + (f" · {call[:8]}" if call else "")
        if e.get("direction") == "out":
            return [arrow(lane, PCSCF, label, "sip")]
        return [arrow(PCSCF, lane, label, "sip")]
    if ns == "iq" and fmt.startswith("Iq {what} to {gateway}") and "failed" not in fmt:
        what = str(e.get("what"))
        label = f"{COMMANDS.get(what, what)} ({what.removesuffix('Request')})"
        return [arrow(PCSCF, AGW, label + (f" ctx {context}" if context else ""), "iq")]
    if ns == "iq" and fmt.startswith("Iq {kind} on {termination}"):
        label = f"Notify {e.get('kind')} {e.get('termination')} ctx {context}"
        return [arrow(AGW, PCSCF, label, "iq", ok="failure" not in str(e.get("kind")))]
    if ns == "accessgw.iq" and fmt.startswith("Iq reserved"):
        return [arrow(AGW, PCSCF, f"Reply Add: {e.get('count')} stream(s), ctx {context}", "iq")]
    if ns == "accessgw.iq" and fmt.startswith("Iq released"):
        label = f"Reply Subtract: {e.get('count')} termination(s), ctx {context}"
        return [arrow(AGW, PCSCF, label, "iq")]
    if ns == "accessgw" and fmt.startswith("TLS established"):
        ue = idx.ue_of_context(context)
        return [arrow(ue, AGW, f"TLS verified {e.get('termination')} (AGW checked UE)", "tls")]
    if ns == "accessgw" and fmt.startswith("TLS refused"):
        label = f"TLS refused {e.get('termination')}: {e.get('cause')}"
        return [arrow(OTHER, AGW, label, "tls", ok=False)]
    if ns.startswith("lab.media") and call is not None and " peer {peer} " in fmt:
        port = _port(e.get("peer"))
        term = idx.access_port_term.get(port or "")
        verified = "verified" in fmt
        stream = str(e.get("stream"))
        if term is not None:
            ue = idx.ue_of_context(idx.term_context.get(term))
            word = "verified" if verified else "refused"
            return [
                arrow(AGW, ue, f"{stream}: TLS {word} (UE checked AGW {term})", "tls", verified)
            ]
        caller, callee = idx.callers.get(call), idx.callees.get(call)
        if caller and callee and "TLS-PSK" in fmt + str(e.get("security", "")):
            word = "verified" if verified else "refused"
            return [arrow(caller, callee, f"{stream}: TLS-PSK {word}", "tls", verified)]
        return []
    if ns == "e2ae.kms" and fmt.startswith("KMS client"):
        return [
            arrow(_ue_lane(e.get("identities")), KMS, "TLS verified (client certificate)", "kms")
        ]
    if ns == "e2ae.kms" and fmt == "KMS {outcome}":
        ok = str(e.get("status")) == "200"
        label = f"{e.get('status')} {e.get('outcome')}"
        return [arrow(KMS, _ue_lane(e.get("identity")), label, "kms", ok)]
    if ns == "accessgw" and fmt.startswith("reserved {termination}"):
        label = f"reserved {e.get('termination')} access port {e.get('access_port')}"
        return [arrow(AGW, AGW, label, "note")]
    if ns == "pcscf" and fmt.startswith("Call {call_id}"):
        return [arrow(PCSCF, PCSCF, f"{e.get('direction')} call ended: {e.get('reason')}", "note")]
    return []


def _ue_lane(identity: object) -> str:
    text = str(identity or "")
    user = text.removeprefix("sip:").split("@", 1)[0].split(",", 1)[0]
    return f"UE {user}" if user else "UE"


def _detail(e: Mapping[str, Any]) -> str:
    keys = ("call_id", "iq_context", "termination", "stream", "peer")
    return ", ".join(f"{k}={e[k]}" for k in keys if _s(e.get(k)) is not None)


def build(events: Iterable[Mapping[str, Any]], *, call_id: str | None = None) -> Diagram:
    """The diagram of ``events`` (in time order); ``call_id``: that call's arrows only."""
    ordered = sorted(
        (dict(e) for e in events if _level(e) != "debug" or e.get("log_namespace") == "iq"),
        key=lambda e: float(e.get("log_time") or 0.0),
    )
    idx = _index(ordered)
    start = float(ordered[0].get("log_time") or 0.0) if ordered else 0.0
    arrows: list[Arrow] = []
    for e in ordered:
        for a in _arrows(e, idx, float(e.get("log_time") or 0.0) - start):
            if call_id is None or a.call_id == call_id:
                arrows.append(a)
    used = {lane for a in arrows for lane in (a.source, a.target)}
    ues = sorted(lane for lane in used if lane.startswith("UE"))
    lanes = [*ues, *(n for n in (OTHER, PCSCF, AGW, CORE, KMS) if n in used)]
    return Diagram(tuple(lanes), tuple(arrows))


def call_ids(diagram: Diagram) -> list[str]:
    """The calls of a diagram, in the order they first appear."""
    seen: dict[str, None] = {}
    for a in diagram.arrows:
        if a.call_id is not None:
            seen.setdefault(a.call_id, None)
    return list(seen)


def _text(value: str) -> str:
    """XML text: escaped, without the characters XML 1.0 cannot hold."""
    kept = "".join(
        c
        for c in value
        if c in "\t\n" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c > "\uffff"
    )
    return escape(kept)


LANE_GAP = 190
ROW = 26
TOP = 60
LEFT = 90


def render_svg(diagram: Diagram, *, title: str = "e2ae call flow") -> str:
    """The diagram as an SVG document (text; no script, no external reference)."""
    x = {lane: LEFT + i * LANE_GAP for i, lane in enumerate(diagram.lanes)}
    width = LEFT + max(1, len(diagram.lanes)) * LANE_GAP
    height = TOP + (len(diagram.arrows) + 1) * ROW + 20
    colour = {c: COLOURS[i % len(COLOURS)] for i, c in enumerate(call_ids(diagram))}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{_text(title)}</title>",
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="context-stroke"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for lane, lx in x.items():
        out.append(
            f'<rect class="lane" x="{lx - 70}" y="10" width="140" height="26" rx="4" '
            f'fill="#eef" stroke="#446"/><text x="{lx}" y="28" text-anchor="middle" '
            f'font-weight="bold">{_text(lane)}</text>'
            f'<line x1="{lx}" y1="36" x2="{lx}" y2="{height - 10}" stroke="#99a" '
            'stroke-dasharray="4 3"/>'
        )
    for row, a in enumerate(diagram.arrows):
        y = TOP + row * ROW + 10
        stroke = colour.get(a.call_id or "", "#555") if a.ok else "#c00"
        tip = _text(f"{a.kind}: {a.label} ({a.detail})" if a.detail else f"{a.kind}: {a.label}")
        label = _text(a.label if len(a.label) <= 48 else a.label[:47] + "…")
        out.append(f'<g class="{a.kind}"><title>{tip}</title>')
        out.append(f'<text x="4" y="{y + 4}" fill="#888">+{a.time:.3f}s</text>')
        x1, x2 = x[a.source], x[a.target]
        dash = ' stroke-dasharray="6 3"' if a.kind in ("iq", "kms") else ""
        if x1 == x2:
            out.append(
                f'<rect x="{x1 + 6}" y="{y - 9}" width="{7 * len(label) + 8}" height="16" '
                f'fill="#ffd" stroke="#aa8"/><text x="{x1 + 10}" y="{y + 3}">{label}</text>'
            )
        else:
            width_ = 2 if a.kind == "tls" else 1.2
            out.append(
                f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{stroke}" '
                f'stroke-width="{width_}"{dash} marker-end="url(#head)"/>'
                f'<text x="{(x1 + x2) / 2}" y="{y - 4}" text-anchor="middle" '
                f'fill="{stroke}">{label}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
