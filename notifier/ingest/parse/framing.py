"""RFC 6587 stream framing: an incremental decoder, one per connection.

Framing is decided per frame, as rsyslog does: a frame that starts with digits, a space and
the "<" of a syslog PRI is octet-counted (RFC 6587 3.4.1); anything else, "2026 year line" too,
runs to the next LF, CRLF or NUL (3.4.2). The decoder never holds more than about one frame
(`max_frame_bytes`) of input: an oversized frame is reported once and skipped, whichever way it
is framed (a counted one by its count, never buffered).
"""

from __future__ import annotations

import re

from notifier.records import ParseError
from notifier.speedups import native

_DELIMITER = re.compile(rb"[\n\x00]")
_BLANK = b"\r\n\x00"
_DIGITS = frozenset(b"0123456789")
# A longer run of digits cannot be a sane octet count: read it as the start of a text line.
_MAX_COUNT_DIGITS = 20
# Counts with more digits than this are nonsense (RFC 5425 frames stay far below 1 GB).
_MAX_COUNT_LEN = 9
# What starts an octet-counted frame, as `FrameDecoder._counted` reads it: COUNT SP "<".
_COUNT_PREFIX = re.compile(rb"[0-9]{1,%d} <" % _MAX_COUNT_DIGITS)


class FrameDecoder:
    """Split a byte stream into frames; feed it what arrives, in any chunking.

    `feed` and `close` return complete frames (without their trailer) and, in stream order, a
    `ParseError` for each frame that had to be refused: ``frame_too_large``,
    ``bad_octet_count`` or ``truncated_frame`` (only at `close`). With ``octet_counting=False``
    every frame is a line (the raw TCP log type), so a line starting ``12 `` stays text.
    """

    def __init__(self, max_frame_bytes: int = 65536, *, octet_counting: bool = True) -> None:
        if max_frame_bytes < 1:
            raise ValueError(f"max_frame_bytes must be at least 1, not {max_frame_bytes}")
        self._max = max_frame_bytes
        self._octet_counting = octet_counting
        self._buf = bytearray()
        self._scanned = 0  # bytes of the pending line already searched for a delimiter
        self._skip_bytes = 0  # rest of an oversized counted frame still to discard
        self._skip_line = False  # discarding up to the next delimiter

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame (at most about one frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | ParseError]:
        self._buf += data
        return self._drain(eof=False)

    def close(self) -> list[bytes | ParseError]:
        """End of stream: a final unterminated line is a frame, a cut counted frame an error."""
        out = self._drain(eof=True)
        self._buf.clear()
        self._scanned = 0
        self._skip_bytes = 0
        self._skip_line = False
        return out

    def _drain(self, *, eof: bool) -> list[bytes | ParseError]:
        out: list[bytes | ParseError] = []
        buf = self._buf
        pos = 0
        end = len(buf)
        while pos < end:
            if self._skip_bytes:
                n = min(self._skip_bytes, end - pos)
                pos += n
                self._skip_bytes -= n
                continue
            if self._skip_line:
                found = _DELIMITER.search(buf, pos)
                if found is None:
                    pos = end
                    break
                pos = found.end()
                self._skip_line = False
                continue
            if buf[pos] in _BLANK:  # empty lines and stray trailers between frames
                pos += 1
                continue
            step: int | None = None
            if self._octet_counting and buf[pos] in _DIGITS:
                step = self._counted(buf, pos, end, out, eof=eof)
            if step is None:  # lines ("2026 year line" too: not octet-counted after all)
                step = self._lines(buf, pos, end, out)
                if step == pos:  # no complete line: wait, or the end of the stream decides
                    step = self._line(buf, pos, end, out, eof=eof)
            if step < 0:  # frame incomplete: wait for more input
                break
            pos = step
        del buf[:pos]
        return out

    def _counted(
        self, buf: bytearray, pos: int, end: int, out: list[bytes | ParseError], *, eof: bool
    ) -> int | None:
        """Next position after an octet-counted frame, -1 to wait, None when it is a line."""
        digits_end = pos
        while digits_end < end and buf[digits_end] in _DIGITS:
            digits_end += 1
            if digits_end - pos > _MAX_COUNT_DIGITS:
                return None
        if digits_end == end:
            return None if eof else -1
        if buf[digits_end] != 0x20:
            return None
        body = digits_end + 1
        # RFC 6587 frames carry syslog messages, which start with "<PRI>": without the "<" this
        # is a text line that happens to start with a number ("2026 year line").
        if body == end:
            return None if eof else -1
        if buf[body] != 0x3C:
            return None
        digits = bytes(buf[pos:digits_end])
        count = int(digits)
        if len(digits) > _MAX_COUNT_LEN or count == 0:
            out.append(
                ParseError("bad_octet_count", f"octet count {digits[:24].decode()!r} is not usable")
            )
            self._skip_line = True
            return body
        if count > self._max:
            out.append(
                ParseError(
                    "frame_too_large",
                    f"octet-counted frame of {count} bytes is over the {self._max}-byte limit",
                )
            )
            self._skip_bytes = count
            return body
        if end - body < count:
            if eof:
                out.append(
                    ParseError(
                        "truncated_frame",
                        f"connection closed {end - body} bytes into a frame of {count} bytes",
                    )
                )
                return end
            return -1
        out.append(bytes(buf[body : body + count]))
        return body + count

    def _lines(self, buf: bytearray, pos: int, end: int, out: list[bytes | ParseError]) -> int:
        """Every complete line from `pos` as `_line` would take them one at a time, split in
        one go; stops before a frame that may be octet-counted. Returns where it stopped
        (`pos` when there is no complete line).

        Lines are what TCP syslog senders send almost always; one split instead of a search,
        a copy and a call per line is most of what this decoder costs.
        """
        last = max(buf.rfind(b"\n", pos, end), buf.rfind(b"\x00", pos, end))
        if last < 0:
            return pos
        self._scanned = 0
        found, stop = _split_lines(buf, pos, last, self._octet_counting, self._max)
        out.extend(self._too_long() if line is None else line for line in found)
        return stop

    def _line(
        self, buf: bytearray, pos: int, end: int, out: list[bytes | ParseError], *, eof: bool
    ) -> int:
        """Next position after a delimited line, or -1 to wait for its end."""
        found = _DELIMITER.search(buf, pos + self._scanned)
        if found is None:
            pending = end - pos
            if eof:
                self._scanned = 0
                self._emit_line(bytes(buf[pos:end]), out)
                return end
            # One byte of slack: a line of exactly max bytes may still end in CR LF.
            if pending > self._max + 1:
                self._scanned = 0
                out.append(self._too_long())
                self._skip_line = True
                return end
            self._scanned = pending
            return -1
        self._scanned = 0
        self._emit_line(bytes(buf[pos : found.start()]), out)
        return found.end()

    def _emit_line(self, line: bytes, out: list[bytes | ParseError]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self._max:
            out.append(self._too_long())
        elif line:
            out.append(line)

    def _too_long(self) -> ParseError:
        return ParseError("frame_too_large", f"line is over the {self._max}-byte limit")


def split_lines_python(
    buf: bytearray, pos: int, last: int, octet_counting: bool, limit: int
) -> tuple[list[bytes | None], int]:
    """The lines of ``buf[pos:last]`` (``buf[last]`` is a delimiter) as `FrameDecoder._lines`
    takes them: without leading CRs and one trailing CR, None for one over `limit`, blank ones
    left out; stops before a frame that may be octet-counted. (The lines, where it stopped.)

    The Python twin of `notifier._speedups.lines`, which runs where that is built."""
    out: list[bytes | None] = []
    chunk = bytes(buf[pos:last])
    parts = chunk.split(b"\n") if b"\x00" not in chunk else _DELIMITER.split(chunk)
    is_counted = _COUNT_PREFIX.match
    at = pos
    for part in parts:
        start, at = at, at + len(part) + 1
        line = part.lstrip(b"\r")  # blank bytes between frames
        if not line:
            continue
        if octet_counting and line[0] in _DIGITS and is_counted(line):
            # octet-counted: its frame may hold LFs, `_counted` reads it by its count
            return out, start + len(part) - len(line)
        if line[-1] == 0x0D:  # CR LF
            line = line[:-1]
        out.append(None if len(line) > limit else line)
    return out, at


# The compiled twin where it is built (notifier/_speedups.c), else the Python one.
_split_lines = native.lines if native is not None else split_lines_python
