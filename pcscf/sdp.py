"""A lossless SDP model (RFC 8866, formerly RFC 4566) for a rewriting ALG.

Parsing keeps every line as text, so ``SessionDescription.parse(data).serialise() == data`` for
any valid SDP written with CRLF line endings; LF-only input is accepted and comes back with CRLF.
Unknown line types, unknown attributes, attribute order and case all survive. Only what the
rewrite edits is ever rebuilt: the ``m=`` line of a stream whose port or proto is set, a ``c=``
line that is set, attributes that are added or removed.

Public API:

- :meth:`SessionDescription.parse` (``bytes`` or ``str``) -> :class:`SessionDescription`, with
  ``session`` (a :class:`Section`: the lines before the first ``m=``) and ``media`` (a list of
  :class:`MediaSection`, one per ``m=`` line, in order); :meth:`SessionDescription.serialise`
  -> ``bytes`` (CRLF), :meth:`SessionDescription.text` -> ``str``.
- Reading: ``MediaSection.media/port/port_count/proto/fmts``; ``Section.attribute_values(name)``
  (names compare case-insensitively, values as written, ``""`` for a flag attribute);
  ``Section.connection`` (the first ``c=`` of that level);
  :meth:`SessionDescription.effective_connection` (media ``c=`` over session ``c=``);
  :meth:`SessionDescription.effective_attribute_values` (media level over session level: if the
  media section has the attribute, only its values count; this is the RFC 8122 rule for
  ``a=fingerprint``) and :meth:`SessionDescription.effective_fingerprints`;
  :meth:`SessionDescription.key_mgmt` (``a=key-mgmt``, RFC 4567: session level, or a stream's
  effective values, each a :class:`KeyMgmt` with its protocol id and base64-decoded data).
- Editing: :meth:`MediaSection.set_port`, :meth:`MediaSection.set_proto`,
  :meth:`MediaSection.set_connection` (replaces the media ``c=`` or inserts one where RFC 8866
  puts it: after ``m=`` and ``i=``, before ``b=``, ``k=`` and ``a=``),
  :meth:`Section.remove_attributes` (one or several names in one pass),
  :meth:`Section.add_attribute` and :meth:`Section.add_lines` (appended at the end of the
  section), :meth:`Section.set_attribute` (first occurrence replaced in place, others removed;
  appended if absent), :meth:`SessionDescription.copy`. Sections keep small attribute indexes;
  code that edits ``lines`` directly calls :meth:`Section.lines_changed`.
- Malformed input raises :class:`pcscf.errors.SdpError` naming the 1-based line and the reason:
  a first line other than ``v=0``, a line that is not ``<letter>=<value>``, an empty line inside
  the body, a CR or NUL inside a line, bytes that are not UTF-8, an attribute name that is not a
  token, an ``m=`` line without ``<media> <port>[/<count>] <proto> <fmt>...`` or with a port
  outside 0-65535, a ``c=`` line without its three fields. Empty lines at the very end are
  ignored.

Pure: no I/O, no Twisted.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import re
from collections.abc import Callable

import attrs

from certs.errors import InvalidFingerprint, UnsupportedHash
from certs.fingerprint import Fingerprint
from pcscf.errors import LocalPcscfError, SdpError

_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz")
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~"
)
#: Media-level lines that RFC 8866 places before ``c=`` (after ``m=``).
_BEFORE_C = frozenset("mi")


@attrs.frozen
class Connection:
    """A ``c=`` line: ``<nettype> <addrtype> <connection-address>``."""

    nettype: str
    addrtype: str
    address: str

    @property
    def line(self) -> str:
        return f"c={self.nettype} {self.addrtype} {self.address}"

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl`` or ``/count`` suffix."""
        return self.address.split("/", 1)[0]

    @classmethod
    def for_ip(cls, ip: str) -> Connection:
        """``IN IP4`` or ``IN IP6`` for a literal IP address (raises LocalPcscfError if not)."""
        return _connection_for_ip(ip)

    @classmethod
    def parse_value(cls, value: str, lineno: int) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(lineno, f"c= needs '<nettype> <addrtype> <address>', got {value!r}")
        return cls(parts[0], parts[1], parts[2])


@functools.lru_cache(maxsize=256)
def _attribute_pattern(name: str) -> Callable[[str], object]:
    """A matcher for ``a=name`` / ``a=name:...`` lines, case-insensitive on the name."""
    return _removal_pattern((name,))


@functools.lru_cache(maxsize=256)
def _removal_pattern(names: tuple[str, ...]) -> Callable[[str], object]:
    """A matcher for the ``a=`` lines of any of ``names`` (case-insensitive)."""
    alternation = "|".join(re.escape(name) for name in names)
    return re.compile("a=(?:" + alternation + ")(?::|$)", re.IGNORECASE).match


_VALUE_FINDERS: dict[str, Callable[[str], list[str]]] = {}


def _values_finder(name: str) -> Callable[[str], list[str]]:
    """``findall`` of the values of ``a=name`` lines in a section's text (``name`` lower-case).

    The text holds token names only (ASCII) and CRLF line breaks only (no LF without its CR:
    ``[^\\r]*`` is the rest of a line), so ASCII case folding is what ``str.lower``
    does to them; a non-ASCII ``name`` finds nothing, as in the line index.
    """
    finder = _VALUE_FINDERS.get(name)
    if finder is None:
        if len(_VALUE_FINDERS) >= 256:
            _VALUE_FINDERS.clear()
        pattern = "\na=(?i:" + re.escape(name) + ")(?::([^\r]*)|(?=\r|\\Z))"
        finder = _VALUE_FINDERS[name] = re.compile(pattern, re.ASCII).findall
    return finder


_LINE_REMOVERS: dict[tuple[str, ...], Callable[[str], str]] = {}
_C_LINES = re.compile(r"\r\nc=[^\r]*")


def _line_remover(names: tuple[str, ...]) -> Callable[[str], str]:
    """A section text without the lines :func:`_removal_pattern` of ``names`` matches (never
    the first line: it is the ``m=`` line)."""
    remover = _LINE_REMOVERS.get(names)
    if remover is None:
        if len(_LINE_REMOVERS) >= 256:
            _LINE_REMOVERS.clear()
        alternation = "|".join(re.escape(name) for name in names)
        # the names in any case, "\r\na=" as written (a literal prefix, which sre scans for
        # fast; the fast parser's texts have no "A=" line)
        pattern = re.compile("\r\na=(?i:" + alternation + ")(?::[^\r]*)?(?=\r|\\Z)")
        remover = _LINE_REMOVERS[names] = functools.partial(pattern.sub, "")
    return remover


def _attribute_name_matches(line: str, name: str) -> bool:
    """Is ``line`` an ``a=`` line of attribute ``name`` (case-insensitive)?"""
    return _attribute_pattern(name)(line) is not None


@attrs.define
class Section:
    """Session-level lines (before the first ``m=``) or one media section (``m=`` first).

    Edit through the methods. ``names`` (lower-case attribute names that may be present, filled
    by the parser) lets lookups skip sections that cannot hold an attribute; code that changes
    ``lines`` directly must call :meth:`lines_changed`.
    """

    lines: list[str]
    names: set[str] | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)
    _values: dict[str, list[str]] | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )
    #: ``"\r\n".join(lines)`` as the parser read it (every attribute name a token), kept
    #: until the first edit: lookups search it with one regex instead of walking the lines.
    _text: str | None = attrs.field(default=None, init=False, eq=False, repr=False)

    def lines_changed(self) -> None:
        """Forget the attribute indexes after ``lines`` was changed directly."""
        self.names = None
        self._values = None
        self._text = None

    def _value_index(self) -> dict[str, list[str]]:
        """Lower-case attribute name -> values, built in one pass and kept until an edit."""
        index: dict[str, list[str]] = {}
        for line in self.lines:
            if line[:2] == "a=":
                colon = line.find(":")
                if colon > 0:
                    name, value = line[2:colon].lower(), line[colon + 1 :]
                else:
                    name, value = line[2:].lower(), ""
                found = index.get(name)
                if found is None:
                    index[name] = [value]
                else:
                    found.append(value)
        self._values = index
        return index

    def _copy(self) -> Section:
        copy = Section(list(self.lines), names=_copy_names(self.names))
        copy._text = self._text
        return copy

    def _detach(self) -> None:
        """Before an edit: the text goes, ``names`` (the parser's set) comes from the lines."""
        if self._text is not None:
            self._text = None
            if self.names is None:
                self.names = _attribute_names(self.lines)

    def _may_have(self, name: str) -> bool:
        text = self._text
        if text is not None:
            return bool(_values_finder(name)(text))
        return self.names is None or name in self.names

    def _note(self, name: str) -> None:
        self._values = None
        if self.names is not None:
            self.names.add(name.lower())

    def attribute_values(self, name: str) -> list[str]:
        """Values of every ``a=name[:value]`` line at this level, in order (flag: ``""``)."""
        name = name.lower()
        text = self._text
        if text is not None:
            return _values_finder(name)(text)
        names = self.names
        if names is not None and name not in names:
            return []
        index = self._values
        if index is None:
            index = self._value_index()
        found = index.get(name)
        return [] if found is None else list(found)

    def has_attribute(self, name: str, value: str | None = None) -> bool:
        """Is there an ``a=name`` line (with this value, compared case-insensitively)?"""
        values = self.attribute_values(name)
        if value is None:
            return bool(values)
        wanted = value.lower()
        return any(v.strip().lower() == wanted for v in values)

    def remove_attributes(self, *names: str) -> int:
        """Remove every ``a=name`` line of the given names; return how many were removed."""
        wanted = tuple(n.lower() for n in names if self._may_have(n.lower()))
        if not wanted:
            return 0
        self._detach()
        match = _removal_pattern(wanted)
        kept = [line for line in self.lines if not match(line)]
        removed = len(self.lines) - len(kept)
        if removed:
            self.lines[:] = kept
            self._values = None
        if self.names is not None:
            self.names.difference_update(wanted)
        return removed

    def add_attribute(self, name: str, value: str | None = None) -> None:
        """Append ``a=name`` or ``a=name:value`` at the end of the section."""
        self._detach()
        self.lines.append(f"a={name}" if value is None else f"a={name}:{value}")
        self._note(name)

    def add_lines(self, lines: list[str]) -> None:
        """Append whole lines (e.g. attribute lines copied from another level)."""
        self._detach()
        self.lines.extend(lines)
        for line in lines:
            if line[:2] == "a=":
                self._note(line[2:].partition(":")[0])

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Make ``a=name[:value]`` the only such line: the first replaced in place, else added."""
        self._detach()
        new = f"a={name}" if value is None else f"a={name}:{value}"
        lname = name.lower()
        out: list[str] = []
        placed = False
        for line in self.lines:
            if _attribute_name_matches(line, lname):
                if not placed:
                    out.append(new)
                    placed = True
                continue
            out.append(line)
        if not placed:
            out.append(new)
        self.lines[:] = out
        self._note(lname)

    def attribute_lines(self, name: str) -> list[str]:
        """The whole ``a=name...`` lines at this level, as written."""
        name = name.lower()
        if not self._may_have(name):
            return []
        match = _attribute_pattern(name)
        return [line for line in self.lines if match(line)]

    @property
    def connection(self) -> Connection | None:
        """The first ``c=`` line of this level, if any."""
        text = self._text
        if text is not None:
            at = text.find("\nc=")
            if at < 0:
                return None
            end = text.find("\r", at)
            return Connection.parse_value(text[at + 3 : end] if end > 0 else text[at + 3 :], 0)
        for line in self.lines:
            if line[:2] == "c=":
                return Connection.parse_value(line[2:], 0)
        return None


@attrs.define
class MediaSection(Section):
    """One media description: ``lines[0]`` is its ``m=`` line."""

    media: str
    port: int
    port_count: int | None
    proto: str
    fmts: tuple[str, ...]

    def _rebuild_m_line(self) -> None:
        self._detach()
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        self.lines[0] = f"m={self.media} {port} {self.proto} {' '.join(self.fmts)}"

    def _copy(self) -> MediaSection:
        copy = MediaSection(
            list(self.lines),
            self.media,
            self.port,
            self.port_count,
            self.proto,
            self.fmts,
            names=_copy_names(self.names),
        )
        copy._text = self._text
        return copy

    def _rewritten(self, proto: str, port: int, ip: str, remove: tuple[str, ...]) -> MediaSection:
        """A copy after ``set_proto(proto)``, ``set_port(port)``,
        ``set_connection(Connection.for_ip(ip))`` and ``remove_attributes(*remove)``, built
        from the text in a few string operations when the section is as parsed."""
        text = self._text
        if text is None:
            copy = self._copy()
            copy.set_proto(proto)
            copy.set_port(port)
            copy.set_connection(Connection.for_ip(ip))
            copy.remove_attributes(*remove)
            return copy
        mline = (self.media, self.port, self.port_count, self.proto, self.fmts)
        lower = tuple(name.lower() for name in remove)
        text = "m=" + _rewritten_piece(text[2:], mline, proto, port, ip, lower)
        copy = MediaSection(text.split("\r\n"), self.media, port, None, proto, self.fmts)
        copy._text = text
        return copy

    def set_port(self, port: int) -> None:
        """Set the port of the ``m=`` line (the ``/count`` is dropped for a unicast AGW port)."""
        if not 0 <= port <= 65535:
            raise LocalPcscfError(f"port out of range: {port}")
        if port != self.port or self.port_count is not None:
            self.port = port
            self.port_count = None
            self._rebuild_m_line()

    def set_proto(self, proto: str) -> None:
        """Set the transport protocol of the ``m=`` line."""
        if proto != self.proto:
            self.proto = proto
            self._rebuild_m_line()

    def set_connection(self, connection: Connection) -> None:
        """Give this stream exactly one media-level ``c=``, at the RFC 8866 place."""
        self._detach()
        new = connection.line
        out: list[str] = []
        placed = False
        for line in self.lines:
            if line[:2] == "c=":
                if not placed:
                    out.append(new)
                    placed = True
                continue
            out.append(line)
        if not placed:
            at = 1
            while at < len(out) and out[at][:1] in _BEFORE_C:
                at += 1
            out.insert(at, new)
        self.lines[:] = out


def _rewritten_piece(
    piece: str, mline: MLine, proto: str, port: int, ip: str, remove: tuple[str, ...]
) -> str:
    """:meth:`MediaSection._rewritten` on the text of a section as parsed, without its ``m=``
    (``mline``: its parsed m-line; ``remove``: lower-case names): the new text, without
    ``m=``."""
    if not 0 <= port <= 65535:
        raise LocalPcscfError(f"port out of range: {port}")
    new_c = _c_line(ip)
    first = piece.find("\r\n")
    media, old_port, port_count, old_proto, fmts = mline
    if proto != old_proto or port != old_port or port_count is not None:
        head = f"{media} {port} {proto} {' '.join(fmts)}"
    else:
        head = piece if first < 0 else piece[:first]
    if first < 0:
        return head + "\r\n" + new_c
    # the lines after the m= line, each with the CRLF before it: built with as few copies
    # of the text as the edits allow (the c= line of the AGW goes first when it can)
    rest = piece[first:]
    lead = ""
    at = rest.find("\r\nc=")
    if at >= 0:
        end = rest.find("\r\n", at + 2)
        tail = "" if end < 0 else rest[end:]
        if "\nc=" in tail:
            tail = _C_LINES.sub("", tail)
        rest = rest[:at] + "\r\n" + new_c + tail
    else:
        at = 0
        while rest.startswith("\r\ni=", at):
            at = rest.find("\r\n", at + 2)
            if at < 0:
                at = len(rest)
                break
        if at:
            rest = rest[:at] + "\r\n" + new_c + rest[at:]
        else:
            lead = "\r\n" + new_c
    if remove:
        rest = _line_remover(remove)(rest)
    return head + lead + rest


@functools.lru_cache(maxsize=64)
def _c_line(ip: str) -> str:
    """``Connection.for_ip(ip).line``, kept: the AGW's addresses are written into every offer."""
    return Connection.for_ip(ip).line


def _parse_m_line(value: str, lineno: int) -> tuple[str, int, int | None, str, tuple[str, ...]]:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(lineno, f"m= needs '<media> <port> <proto> <fmt> ...', got {value!r}")
    media, port_text, proto = parts[0], parts[1], parts[2]
    count: int | None = None
    if "/" in port_text:
        port_text, count_text = port_text.split("/", 1)
        digits = count_text.isdigit() and count_text.isascii() and len(count_text) <= 10
        if not digits or int(count_text) < 1:
            raise SdpError(lineno, f"m= port count must be a positive number, got {count_text!r}")
        count = int(count_text)
    digits = port_text.isdigit() and port_text.isascii() and len(port_text) <= 10
    if not digits or int(port_text) > 65535:
        raise SdpError(lineno, f"m= port must be a number 0-65535, got {port_text!r}")
    return media, int(port_text), count, proto, tuple(parts[3:])


@functools.lru_cache(maxsize=64)
def _connection_for_ip(ip: str) -> Connection:
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise LocalPcscfError(f"not an IP address: {ip!r}") from exc
    return Connection("IN", "IP4" if parsed.version == 4 else "IP6", str(parsed))


def _parse_fingerprint(value: str) -> Fingerprint:
    """:meth:`Fingerprint.parse` (which reads the usual spelling with bytes.fromhex itself)."""
    return Fingerprint.parse(value)


_new_object = object.__new__


def _attribute_names(lines: list[str]) -> set[str]:
    """The lower-case names of the ``a=`` lines, as the line parser collects them."""
    names: set[str] = set()
    for line in lines:
        if line[:2] == "a=":
            colon = line.find(":")
            names.add((line[2:colon] if colon > 0 else line[2:]).lower())
    return names


def _copy_names(names: set[str] | None) -> set[str] | None:
    return None if names is None else set(names)


def _bad_utf8(data: bytes, exc: UnicodeDecodeError) -> SdpError:
    lineno = data.count(b"\n", 0, exc.start) + 1
    return SdpError(lineno, f"not UTF-8 (byte 0x{data[exc.start]:02X})")


def _parse_lines(raw: list[str], controls: bool) -> tuple[Section, list[MediaSection]]:
    """Parse the lines (v=0 already checked); raises SdpError at the first malformed line.

    ``controls``: the text may hold a CR or NUL inside a line (check each line for them).
    """
    names: set[str] = set()
    session = Section([], names=names)
    media: list[MediaSection] = []
    current = session.lines
    append = current.append
    type_chars = _TYPE_CHARS
    token_chars = _TOKEN_CHARS
    for lineno, line in enumerate(raw, 1):
        if line[1:2] != "=":
            if not line:
                raise SdpError(lineno, "empty line")
            raise SdpError(lineno, f"expected '<type>=<value>', got {line[:40]!r}")
        if controls and ("\r" in line or "\x00" in line):
            raise SdpError(lineno, "control character inside the line")
        kind = line[0]
        if kind == "a":
            colon = line.find(":")
            name = line[2:colon] if colon > 0 else line[2:]
            if not name or not token_chars.issuperset(name):
                raise SdpError(lineno, f"attribute name must be a token, got {line[:40]!r}")
            names.add(name.lower())
        elif kind == "m":
            names = set()
            section = MediaSection([line], *_parse_m_line(line[2:], lineno), names=names)
            media.append(section)
            append = section.lines.append
            continue
        elif kind == "c":
            if len(line[2:].split()) != 3:
                Connection.parse_value(line[2:], lineno)  # raises, naming the line
        elif kind not in type_chars:
            raise SdpError(lineno, f"expected '<type>=<value>', got {line[:40]!r}")
        append(line)
    return session, media


_NAME_RE = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
#: In a CRLF body without NUL whose first line is ``v=0``: a line break followed by a line that
#: is not in the simplest spelling the line parser accepts (``a=<token>`` then ``:`` or the end
#: of the line; ``c=`` with three fields and single spaces; ``m=``, checked by _parse_m_line;
#: any other type letter). A body without one goes the fast way; every other body (and every
#: malformed one) goes to the line parser, which names the line.
_SIMPLE_LINE = r"a=" + _NAME_RE + r"(?::|\r|\Z)|c=\S+ \S+ \S+(?:\r|\Z)|m=|[bd-ln-z]="


MLine = tuple[str, int, int | None, str, tuple[str, ...]]
#: The ``m=`` line values of a CRLF body, in order (one per ``\r\nm=``).
_M_VALUES = re.compile(r"\nm=([^\r]*)").findall
#: The fields of an ``m=`` line written in the simplest way (single spaces, printable ASCII,
#: ``<port>[/<count>]`` of at most ten digits each): ``str.split`` gives the same fields, so
#: that only the numbers are left to check. Lines written otherwise are not matched
#: (:func:`_parse_m_line` takes them).
_M_FIELDS = r"m=([!-~]+) ([0-9]{1,10})(?:/([0-9]{1,10}))? ([!-~]+) ([!-~]+(?: [!-~]+)*)(?=\r|\Z)"
#: One pass over the line breaks of a body: for each ``m=`` line in the simplest spelling its
#: five fields (:data:`_M_FIELDS`), for each line that is not simple an empty tuple of them
#: (:data:`_FLAGGED`), for the other lines nothing. One pass where there were two (a search
#: for a line that is not simple, then one for the ``m=`` fields): 3 % of a full MSRP + audio
#: rewrite (callgrind).
_SCAN_LINES = re.compile(r"\n(?:" + _M_FIELDS + "|(?!" + _SIMPLE_LINE + "))").findall
#: :data:`_SCAN_LINES` for a body whose line breaks are not known to be CRLF: an LF not
#: preceded by CR is flagged too (in the same pass).
_SCAN_CRLF = re.compile(r"\n(?:(?<!\r\n)|" + _M_FIELDS + "|(?!" + _SIMPLE_LINE + "))").findall
_Scan = Callable[[str], list[tuple[str, str, str, str, str]]]
_FLAGGED = ("", "", "", "", "")


def _parse_fast(body: str, scan: _Scan) -> tuple[list[str], list[MLine]] | None:
    """Check a CRLF body (no NUL, no trailing line break) for the fast way: None unless its
    lines are all simple (``scan``: :data:`_SCAN_LINES`, or :data:`_SCAN_CRLF` for a body
    whose line breaks are not known to be CRLF) and its m= lines good (the line parser then
    parses it or names the bad line). Otherwise the pieces ``body.split("\\r\\nm=")`` (the
    session's text, then each media section's text without its leading ``m=``) and the parsed
    ``m=`` lines: what :func:`_sections` makes sections of."""
    if body[:5] != "v=0\r\n" and body != "v=0":
        return None
    fields = scan(body)
    if _FLAGGED in fields:
        return None
    pieces = body.split("\r\nm=")
    mlines: list[MLine] = []
    if len(fields) == len(pieces) - 1:
        for media, port_text, count_text, proto, fmts in fields:
            port = int(port_text)
            if port > 65535:
                return None
            if count_text:
                count: int | None = int(count_text)
                if not count:
                    return None
            else:
                count = None
            mlines.append((media, port, count, proto, tuple(fmts.split(" "))))
        return pieces, mlines
    try:
        mlines = [_parse_m_line(value, 0) for value in _M_VALUES(body)]
    except SdpError:
        return None
    return pieces, mlines


def _parse_crlf(text: str) -> tuple[list[str], list[MLine]] | None:
    """:func:`_parse_fast` of a text without NUL that holds a CR, if all its line breaks are
    CRLF: as many CR as LF, every LF of the body after a CR (checked in the same pass as its
    lines) and only CRLF after the body."""
    if text.count("\r") != text.count("\n"):
        return None
    body = text.rstrip("\r\n")
    tail = text[len(body) :]
    if tail != "\r\n" * (len(tail) >> 1):
        return None
    return _parse_fast(body, _SCAN_CRLF)


def _sections(pieces: list[str], mlines: list[MLine]) -> tuple[Section, list[MediaSection]]:
    """The sections of :func:`_parse_fast`'s pieces, each keeping its text."""
    text = pieces[0]
    session = Section(text.split("\r\n"))
    session._text = text
    media: list[MediaSection] = []
    for piece, mline in zip(pieces[1:], mlines, strict=True):
        text = "m=" + piece
        section = MediaSection(text.split("\r\n"), *mline)
        section._text = text
        media.append(section)
    return session, media


#: RFC 4567 §3.1: ``prtcl-id`` is a token (``mikey`` for MIKEY, RFC 4567 §4.1).
_KMPID = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+")


#: The protos of the streams a MIKEY-TICKET exchange keys with TLS-PSK (TS 33.328 Annex H).
KEYED_TLS_PROTOS: tuple[str, ...] = ("TCP/TLS/MSRP", "TCP/TLS/BFCP")


@attrs.frozen
class KeyMgmt:
    """One ``a=key-mgmt:<prtcl-id> <keymgmt-data>`` (RFC 4567 §3.1): the key management
    protocol (``mikey``) and its data, base64-decoded (for MIKEY: one MIKEY message)."""

    protocol: str
    data: bytes

    @classmethod
    def parse(cls, value: str) -> KeyMgmt:
        """Raises ValueError saying what is wrong."""
        protocol, sep, data = value.strip().partition(" ")
        if not sep or not _KMPID.fullmatch(protocol):
            raise ValueError("expected 'a=key-mgmt:<prtcl-id> <base64 data>'")
        try:
            raw = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"the {protocol} data is not base64") from None
        if not raw:
            raise ValueError(f"the {protocol} data is empty")
        return cls(protocol.lower(), raw)

    def value(self) -> str:
        """The attribute value (what follows ``a=key-mgmt:``)."""
        return f"{self.protocol} {base64.b64encode(self.data).decode('ascii')}"


class SessionDescription:
    """A whole SDP body: session-level lines and the media sections in order.

    Equality, ``repr`` and the fields are those of an attrs class with the fields ``session``
    and ``media``. A description parsed the fast way (or made by the e2ae rewrite from one)
    holds its text in pieces (the session's text, then each media section's text without its
    ``m=``) and the parsed ``m=`` lines, and builds ``session`` and ``media`` from them the
    first time either is looked at: until then :meth:`text` joins the pieces, and the rewrite
    reads them (``_pieces`` / ``_mlines``, None once the sections are built).
    """

    __slots__ = ("__weakref__", "_media", "_mlines", "_pieces", "_session")
    __match_args__ = ("session", "media")

    _session: Section | None
    _media: list[MediaSection] | None
    _pieces: list[str] | None
    _mlines: list[MLine] | None

    def __init__(self, session: Section, media: list[MediaSection]) -> None:
        self._session = session
        self._media = media
        self._pieces = None
        self._mlines = None

    @classmethod
    def _from_pieces(cls, pieces: list[str], mlines: list[MLine]) -> SessionDescription:
        """A description whose sections are built from ``pieces`` when first looked at
        (``"\\r\\nm=".join(pieces)`` is its text without the final CRLF; one m-line per
        piece after the first). The lists are never changed in place."""
        sdp: SessionDescription = _new_object(cls)
        sdp._session = None
        sdp._media = None
        sdp._pieces = pieces
        sdp._mlines = mlines
        return sdp

    def _build(self) -> None:
        pieces, mlines = self._pieces, self._mlines
        assert pieces is not None and mlines is not None
        self._session, self._media = _sections(pieces, mlines)
        self._pieces = self._mlines = None

    @property
    def session(self) -> Section:
        session = self._session
        if session is None:
            self._build()
            session = self._session
            assert session is not None
        return session

    @session.setter
    def session(self, value: Section) -> None:
        if self._pieces is not None:
            self._build()
        self._session = value

    @property
    def media(self) -> list[MediaSection]:
        media = self._media
        if media is None:
            self._build()
            media = self._media
            assert media is not None
        return media

    @media.setter
    def media(self, value: list[MediaSection]) -> None:
        if self._pieces is not None:
            self._build()
        self._media = value

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, SessionDescription)
        return (self.session, self.media) == (other.session, other.media)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        if result is NotImplemented:
            return NotImplemented
        return not result

    __hash__ = None  # type: ignore[assignment]  # mutable, as an attrs class with eq

    def __repr__(self) -> str:
        return f"SessionDescription(session={self.session!r}, media={self.media!r})"

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse SDP (CRLF or LF line endings); raise SdpError on malformed input."""
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _bad_utf8(data, exc) from None
        else:
            text = data
        controls = "\x00" in text
        if "\r" not in text:
            if not controls:
                fast = _parse_fast(text.rstrip("\n").replace("\n", "\r\n"), _SCAN_LINES)
                if fast is not None:
                    return cls._from_pieces(*fast)
            raw = text.split("\n")
        elif not controls and (fast := _parse_crlf(text)) is not None:
            return cls._from_pieces(*fast)
        elif text.count("\r\n") == text.count("\r") == text.count("\n"):
            raw = text.split("\r\n")
        else:  # mixed line endings, or a stray CR: line by line
            raw = [line[:-1] if line[-1:] == "\r" else line for line in text.split("\n")]
            controls = True
        while raw and raw[-1] == "":
            raw.pop()
        if not raw:
            raise SdpError(1, "empty SDP")
        if raw[0] != "v=0":
            if raw[0][:2] == "v=":
                raise SdpError(1, f"unsupported SDP version {raw[0][2:]!r}")
            raise SdpError(1, f"SDP must start with v=0, got {raw[0][:40]!r}")
        return cls(*_parse_lines(raw, controls))

    def text(self) -> str:
        """The SDP as text with CRLF line endings."""
        pieces = self._pieces
        if pieces is not None:
            return "\r\nm=".join(pieces) + "\r\n"
        parts = [*self.session.lines]
        for section in self.media:
            parts.extend(section.lines)
        return "\r\n".join(parts) + "\r\n"

    def serialise(self) -> bytes:
        """The SDP as bytes with CRLF line endings."""
        return self.text().encode("utf-8")

    def copy(self) -> SessionDescription:
        """An independent copy that can be edited without touching this one."""
        pieces, mlines = self._pieces, self._mlines
        if pieces is not None and mlines is not None:
            return SessionDescription._from_pieces(pieces, mlines)
        return SessionDescription(self.session._copy(), [m._copy() for m in self.media])

    def effective_connection(self, index: int) -> Connection | None:
        """The stream's connection: media-level ``c=`` over session-level ``c=``."""
        own = self.media[index].connection
        return own if own is not None else self.session.connection

    def effective_attribute_values(self, index: int, name: str) -> list[str]:
        """Values of ``a=name`` for a stream: media level if present there, else session."""
        own = self.media[index].attribute_values(name)
        return own if own else self.session.attribute_values(name)

    def key_mgmt(self, index: int | None = None) -> list[KeyMgmt]:
        """``a=key-mgmt`` of the session (``index`` None) or effective for stream ``index``
        (media level over session level: RFC 4567 §3.1 lets a media-level attribute
        override the session-level one). A value that is not RFC 4567 syntax raises
        SdpError; the e2ae rewrite never calls this, so a KMS stream passes however it is
        written."""
        if index is None:
            values = self.session.attribute_values("key-mgmt")
        else:
            values = self.effective_attribute_values(index, "key-mgmt")
        out: list[KeyMgmt] = []
        for value in values:
            try:
                out.append(KeyMgmt.parse(value))
            except ValueError as exc:
                line = (
                    self._session_line_of("key-mgmt")
                    if index is None
                    else self.line_number_of(index, "key-mgmt")
                )
                raise SdpError(line, f"bad a=key-mgmt: {exc}") from None
        return out

    def tls_streams(self) -> list[int]:
        """Indexes of the ``TCP/TLS/MSRP`` and ``TCP/TLS/BFCP`` m-lines, in order: the streams
        a MIKEY message keys, crypto session *n* being the *n*-th of them (TS 33.328 Annex
        H.1)."""
        return [i for i, m in enumerate(self.media) if m.proto.upper() in KEYED_TLS_PROTOS]

    def tls_key_mgmt(self, protocol: str = "mikey") -> bytes:
        """The data of the one effective ``a=key-mgmt:<protocol>`` that keys every TLS stream
        (:meth:`tls_streams`). ValueError saying why when there is no TLS stream, when a stream
        has none or more than one, or when the streams are keyed by different data; SdpError
        for a value that is not RFC 4567 syntax."""
        streams = self.tls_streams()
        if not streams:
            raise ValueError("no TCP/TLS/MSRP or TCP/TLS/BFCP stream")
        found = {
            tuple(k.data for k in self.key_mgmt(index) if k.protocol == protocol)
            for index in streams
        }
        if len(found) > 1:
            raise ValueError(f"the TLS streams are keyed by different {protocol.upper()} data")
        (values,) = found
        if len(values) != 1:
            raise ValueError(f"{len(values)} a=key-mgmt:{protocol} for the TLS streams, not one")
        return values[0]

    def _session_line_of(self, attribute: str) -> int:
        for offset, line in enumerate(self.session.lines, 1):
            if _attribute_name_matches(line, attribute):
                return offset
        return 1

    def effective_fingerprints(
        self, index: int, accepted: tuple[str, ...] | None = None
    ) -> list[Fingerprint]:
        """The stream's usable ``a=fingerprint`` values (RFC 8122: media level over session).

        Values with an unknown or refused hash function (``md5``), or a hash function outside
        ``accepted``, are skipped; a value that is not RFC 8122 syntax raises SdpError.
        """
        return self._usable_fingerprints(
            self.effective_attribute_values(index, "fingerprint"), index, accepted
        )

    def _usable_fingerprints(
        self, values: list[str], index: int, accepted: tuple[str, ...] | None
    ) -> list[Fingerprint]:
        """:meth:`effective_fingerprints` of the stream's effective values ``values``."""
        out: list[Fingerprint] = []
        for value in values:
            try:
                fp = _parse_fingerprint(value)
            except UnsupportedHash:
                continue
            except InvalidFingerprint as exc:
                raise SdpError(
                    self.line_number_of(index, "fingerprint"),
                    f"bad a=fingerprint {value!r}: {exc.reason}",
                ) from None
            if accepted is None or fp.hash_func in accepted:
                out.append(fp)
        return out

    def line_number_of(self, index: int, attribute: str) -> int:
        """1-based line of the first ``a=attribute`` effective for a stream (for messages)."""
        lname = attribute.lower()
        number = len(self.session.lines)
        for section in self.media[:index]:
            number += len(section.lines)
        for offset, line in enumerate(self.media[index].lines, 1):
            if _attribute_name_matches(line, lname):
                return number + offset
        for offset, line in enumerate(self.session.lines, 1):
            if _attribute_name_matches(line, lname):
                return offset
        return number + 1
