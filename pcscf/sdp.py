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
  ``a=fingerprint``) and :meth:`SessionDescription.effective_fingerprints`.
- Editing: :meth:`MediaSection.set_port`, :meth:`MediaSection.set_proto`,
  :meth:`MediaSection.set_connection` (replaces the media ``c=`` or inserts one where RFC 8866
  puts it: after ``m=`` and ``i=``, before ``b=``, ``k=`` and ``a=``),
  :meth:`Section.remove_attributes`, :meth:`Section.add_attribute` (appended at the end of the
  section), :meth:`Section.set_attribute` (first occurrence replaced in place, others removed;
  appended if absent), :meth:`SessionDescription.copy`.
- Malformed input raises :class:`pcscf.errors.SdpError` naming the 1-based line and the reason.

Pure: no I/O, no Twisted.
"""

from __future__ import annotations

import ipaddress

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
        try:
            parsed = ipaddress.ip_address(ip)
        except ValueError as exc:
            raise LocalPcscfError(f"not an IP address: {ip!r}") from exc
        return cls("IN", "IP4" if parsed.version == 4 else "IP6", str(parsed))

    @classmethod
    def parse_value(cls, value: str, lineno: int) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(lineno, f"c= needs '<nettype> <addrtype> <address>', got {value!r}")
        return cls(parts[0], parts[1], parts[2])


def _attribute_name_matches(line: str, name: str) -> bool:
    """Is ``line`` an ``a=`` line of attribute ``name`` (case-insensitive)?"""
    end = 2 + len(name)
    return (
        line[:2] == "a=" and line[2:end].lower() == name and (len(line) == end or line[end] == ":")
    )


@attrs.define
class Section:
    """Session-level lines (before the first ``m=``) or one media section (``m=`` first)."""

    lines: list[str]

    def attribute_values(self, name: str) -> list[str]:
        """Values of every ``a=name[:value]`` line at this level, in order (flag: ``""``)."""
        name = name.lower()
        start = 3 + len(name)
        return [line[start:] for line in self.lines if _attribute_name_matches(line, name)]

    def has_attribute(self, name: str, value: str | None = None) -> bool:
        """Is there an ``a=name`` line (with this value, compared case-insensitively)?"""
        values = self.attribute_values(name)
        if value is None:
            return bool(values)
        wanted = value.lower()
        return any(v.strip().lower() == wanted for v in values)

    def remove_attributes(self, name: str) -> int:
        """Remove every ``a=name`` line; return how many were removed."""
        name = name.lower()
        kept = [line for line in self.lines if not _attribute_name_matches(line, name)]
        removed = len(self.lines) - len(kept)
        if removed:
            self.lines[:] = kept
        return removed

    def add_attribute(self, name: str, value: str | None = None) -> None:
        """Append ``a=name`` or ``a=name:value`` at the end of the section."""
        self.lines.append(f"a={name}" if value is None else f"a={name}:{value}")

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Make ``a=name[:value]`` the only such line: the first replaced in place, else added."""
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

    def attribute_lines(self, name: str) -> list[str]:
        """The whole ``a=name...`` lines at this level, as written."""
        name = name.lower()
        return [line for line in self.lines if _attribute_name_matches(line, name)]

    @property
    def connection(self) -> Connection | None:
        """The first ``c=`` line of this level, if any."""
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
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        self.lines[0] = f"m={self.media} {port} {self.proto} {' '.join(self.fmts)}"

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


def _parse_m_line(value: str, lineno: int) -> tuple[str, int, int | None, str, tuple[str, ...]]:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(lineno, f"m= needs '<media> <port> <proto> <fmt> ...', got {value!r}")
    media, port_text, proto = parts[0], parts[1], parts[2]
    count: int | None = None
    if "/" in port_text:
        port_text, count_text = port_text.split("/", 1)
        if not count_text.isdigit() or not count_text.isascii() or int(count_text) < 1:
            raise SdpError(lineno, f"m= port count must be a positive number, got {count_text!r}")
        count = int(count_text)
    if not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
        raise SdpError(lineno, f"m= port must be a number 0-65535, got {port_text!r}")
    return media, int(port_text), count, proto, tuple(parts[3:])


def _bad_utf8(data: bytes, exc: UnicodeDecodeError) -> SdpError:
    lineno = data.count(b"\n", 0, exc.start) + 1
    return SdpError(lineno, f"not UTF-8 (byte 0x{data[exc.start]:02X})")


@attrs.define
class SessionDescription:
    """A whole SDP body: session-level lines and the media sections in order."""

    session: Section
    media: list[MediaSection]

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
        raw = text.split("\n")
        if raw[-1] == "":
            raw.pop()
        while raw and raw[-1] in ("", "\r"):
            raw.pop()
        if not raw:
            raise SdpError(1, "empty SDP")
        session: list[str] = []
        media: list[MediaSection] = []
        current = session
        for lineno, line in enumerate(raw, 1):
            if line[-1:] == "\r":
                line = line[:-1]
            if len(line) < 2 or line[1] != "=" or line[0] not in _TYPE_CHARS:
                if not line:
                    raise SdpError(lineno, "empty line")
                raise SdpError(lineno, f"expected '<type>=<value>', got {line[:40]!r}")
            if "\r" in line or "\x00" in line:
                raise SdpError(lineno, "control character inside the line")
            kind = line[0]
            if lineno == 1:
                if kind != "v":
                    raise SdpError(1, f"SDP must start with v=0, got {line[:40]!r}")
                if line != "v=0":
                    raise SdpError(1, f"unsupported SDP version {line[2:]!r}")
            elif kind == "m":
                fields = _parse_m_line(line[2:], lineno)
                section = MediaSection([line], *fields)
                media.append(section)
                current = section.lines
                continue
            elif kind == "a":
                name = line[2:].split(":", 1)[0]
                if not name or not all(c in _TOKEN_CHARS for c in name):
                    raise SdpError(lineno, f"attribute name must be a token, got {line[:40]!r}")
            elif kind == "c":
                Connection.parse_value(line[2:], lineno)
            current.append(line)
        return cls(Section(session), media)

    def text(self) -> str:
        """The SDP as text with CRLF line endings."""
        parts = [*self.session.lines]
        for section in self.media:
            parts.extend(section.lines)
        return "\r\n".join(parts) + "\r\n"

    def serialise(self) -> bytes:
        """The SDP as bytes with CRLF line endings."""
        return self.text().encode("utf-8")

    def copy(self) -> SessionDescription:
        """An independent copy that can be edited without touching this one."""
        return SessionDescription(
            Section(list(self.session.lines)),
            [
                MediaSection(list(m.lines), m.media, m.port, m.port_count, m.proto, m.fmts)
                for m in self.media
            ],
        )

    def effective_connection(self, index: int) -> Connection | None:
        """The stream's connection: media-level ``c=`` over session-level ``c=``."""
        own = self.media[index].connection
        return own if own is not None else self.session.connection

    def effective_attribute_values(self, index: int, name: str) -> list[str]:
        """Values of ``a=name`` for a stream: media level if present there, else session."""
        own = self.media[index].attribute_values(name)
        return own if own else self.session.attribute_values(name)

    def effective_fingerprints(
        self, index: int, accepted: tuple[str, ...] | None = None
    ) -> list[Fingerprint]:
        """The stream's usable ``a=fingerprint`` values (RFC 8122: media level over session).

        Values with an unknown or refused hash function (``md5``), or a hash function outside
        ``accepted``, are skipped; a value that is not RFC 8122 syntax raises SdpError.
        """
        out: list[Fingerprint] = []
        for value in self.effective_attribute_values(index, "fingerprint"):
            try:
                fp = Fingerprint.parse(value)
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
