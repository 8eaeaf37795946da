"""A small, incremental Server-Sent Events parser (the WHATWG "event stream" rules).

It knows nothing about HTTP or about what the events mean: bytes go in through
``feed`` in whatever pieces the network delivers, complete events come out.

    parser = SSEParser()
    for chunk in chunks:
        for event in parser.feed(chunk):
            print(event.id, event.event, event.data)

What it does, as the specification says:

- lines end with CRLF, LF or CR, also when a CR and its LF arrive in different chunks;
  a UTF-8 byte order mark at the very start is dropped; bytes are decoded as UTF-8
  with replacement characters;
- ``data`` lines accumulate, joined by LF; a blank line dispatches the event, and an event
  with no ``data`` line is not dispatched (its ``id`` still counts);
- lines starting with ``:`` are comments (keep-alives) and only counted;
- ``field`` without a colon is a field with an empty value; one space after the colon is
  dropped; unknown fields are ignored;
- ``id`` containing NUL is ignored; ``id`` persists to later events until changed
  (``last_event_id``, what a reconnecting client sends as ``Last-Event-ID``);
- ``retry`` with only ASCII digits sets ``retry`` (milliseconds), anything else is ignored;
- an event not finished by a blank line when the stream ends is dropped.

A line longer than ``max_line`` bytes raises ``ProtocolError`` instead of growing without
bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ProtocolError

DEFAULT_MAX_LINE = 16 * 1024 * 1024
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type (``message`` unless named), data and the last event id."""

    event: str
    data: str
    id: str


class SSEParser:
    """Feed bytes, get events. One parser per connection (``last_event_id`` survives reconnects
    only if the caller carries it over)."""

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments = 0
        self._pending = bytearray()  # bytes of the current, unfinished line
        self._skip_lf = False  # the previous chunk ended in CR: an LF starting this one belongs to it
        self._started = False  # the BOM check happens once, on the first line
        self._data: list[str] = []
        self._event = ""
        self._has_data = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk``; the events it completed, in order."""
        events: list[SSEEvent] = []
        start = 0
        if self._skip_lf and chunk[:1] == b"\n":
            start = 1
        self._skip_lf = False
        end = len(chunk)
        while start < end:
            cr = chunk.find(b"\r", start)
            lf = chunk.find(b"\n", start)
            if cr == -1 and lf == -1:
                self._pending += chunk[start:]
                if len(self._pending) > self.max_line:
                    raise ProtocolError(f"event stream line longer than {self.max_line} bytes")
                break
            if cr == -1 or (lf != -1 and lf < cr):
                stop, nxt = lf, lf + 1
            elif cr + 1 < end:
                stop, nxt = cr, cr + 2 if chunk[cr + 1 : cr + 2] == b"\n" else cr + 1
            else:  # CR is the last byte: its LF, if any, comes with the next chunk
                stop, nxt = cr, cr + 1
                self._skip_lf = True
            if self._pending:
                self._pending += chunk[start:stop]
                raw = bytes(self._pending)
                self._pending.clear()
            else:
                raw = chunk[start:stop]
            if len(raw) > self.max_line:
                raise ProtocolError(f"event stream line longer than {self.max_line} bytes")
            event = self._line(raw.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = nxt
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not self._started:
            self._started = True
            if line.startswith(_BOM):
                line = line[1:]
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event, has_data = self._data, self._event, self._has_data
        self._data, self._event, self._has_data = [], "", False
        if not has_data:
            return None
        return SSEEvent(event=event or "message", data="\n".join(data), id=self.last_event_id)
