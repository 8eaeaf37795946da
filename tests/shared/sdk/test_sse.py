"""``shared.sdk.sse.SSEParser``: the event-stream rules, fed in every way a network may split them."""

from __future__ import annotations

import pytest

from shared.errors import ProtocolError
from shared.sdk.sse import SSEEvent, SSEParser


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def bytewise(data: bytes) -> list[SSEEvent]:
    return parse(*(data[i : i + 1] for i in range(len(data))))


STREAM = (
    b"retry: 1000\n\n"
    b": keep-alive\n"
    b'id: 7\nevent: put\ndata: {"a":\ndata: 1}\n\n'
    b"data: plain\n\n"
    b"id: 9\r\nevent: delete\r\ndata: x\r\n\r\n"
    b"event: progress\rdata: y\r\r"
)


class TestSSEParser:
    def test_fields_and_dispatch(self) -> None:
        """id, event and data lines make one event at the blank line; the id carries over."""
        events = parse(b"id: 5\nevent: put\ndata: hello\n\ndata: again\n\n")
        assert events == [SSEEvent("put", "hello", "5"), SSEEvent("message", "again", "5")]

    def test_multi_line_data_joined_by_lf(self) -> None:
        """Several data lines are one value joined with LF, without a trailing LF."""
        assert parse(b"data: one\ndata: two\ndata:\ndata: four\n\n") == [
            SSEEvent("message", "one\ntwo\n\nfour", "")
        ]

    def test_comments_are_skipped_and_counted(self) -> None:
        """Lines starting with a colon are comments: no event, no effect on the next one."""
        parser = SSEParser()
        assert parser.feed(b": ping\n\n:\n") == []
        assert parser.feed(b"data: x\n: in between\n\n") == [SSEEvent("message", "x", "")]
        assert parser.comments == 3

    def test_every_line_ending(self) -> None:
        """LF, CRLF and CR all end lines; all three give the same events."""
        lf = parse(b"id: 1\ndata: a\n\n")
        assert parse(b"id: 1\r\ndata: a\r\n\r\n") == lf
        assert parse(b"id: 1\rdata: a\r\r") == lf
        assert lf == [SSEEvent("message", "a", "1")]

    def test_crlf_split_across_chunks(self) -> None:
        """A CR ending one chunk and the LF starting the next are one line end, not two."""
        assert parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [SSEEvent("message", "a\nb", "")]

    def test_any_split_gives_the_same_events(self) -> None:
        """Byte by byte, or in one piece: the same events, including CR-only and CRLF streams."""
        whole = parse(STREAM)
        assert bytewise(STREAM) == whole
        assert [(e.event, e.data, e.id) for e in whole] == [
            ("put", '{"a":\n1}', "7"),
            ("message", "plain", "7"),
            ("delete", "x", "9"),
            ("progress", "y", "9"),
        ]

    def test_retry_needs_digits(self) -> None:
        """retry sets the reconnection time only when it is all ASCII digits."""
        parser = SSEParser()
        parser.feed(b"retry: 1500\n\n")
        assert parser.retry == 1500
        parser.feed(b"retry: 2s\nretry: -1\nretry:\n\n")
        assert parser.retry == 1500

    def test_id_with_nul_ignored_and_empty_id_resets(self) -> None:
        """An id holding NUL is ignored; an empty id clears the last event id."""
        parser = SSEParser()
        parser.feed(b"id: 3\ndata: a\n\nid: 4\x005\ndata: b\n\n")
        assert parser.last_event_id == "3"
        assert parser.feed(b"id\ndata: c\n\n") == [SSEEvent("message", "c", "")]

    def test_event_without_data_not_dispatched_but_id_kept(self) -> None:
        """A block with no data line dispatches nothing, yet its id becomes the last event id."""
        parser = SSEParser()
        assert parser.feed(b"id: 42\nevent: progress\n\n") == []
        assert parser.last_event_id == "42"
        assert parser.feed(b"data: x\n\n") == [SSEEvent("message", "x", "42")]  # the event type did reset

    def test_colon_and_space_rules(self) -> None:
        """One space after the colon is dropped, a second kept; a field without colon has an empty value."""
        assert parse(b"data:x\n\n", b"data:  x\n\n", b"data\n\n") == [
            SSEEvent("message", "x", ""),
            SSEEvent("message", " x", ""),
            SSEEvent("message", "", ""),
        ]

    def test_unknown_fields_ignored(self) -> None:
        assert parse(b"foo: bar\ndata: x\nDATA: y\n\n") == [SSEEvent("message", "x", "")]

    def test_unfinished_event_dropped(self) -> None:
        """An event without its blank line when the stream ends never comes out."""
        parser = SSEParser()
        assert parser.feed(b"data: complete\n\ndata: cut off\n") == [SSEEvent("message", "complete", "")]

    def test_bom_and_utf8_split(self) -> None:
        """A leading BOM is dropped; a multi-byte character split between chunks survives."""
        data = "\ufeffdata: caf\u00e9 \u2603\n\n".encode()
        assert bytewise(data) == [SSEEvent("message", "caf\u00e9 \u2603", "")]
        assert parse(b"data: \xff\n\n") == [SSEEvent("message", "\ufffd", "")]

    def test_endless_line_refused(self) -> None:
        """A line longer than max_line raises ProtocolError instead of buffering forever."""
        parser = SSEParser(max_line=64)
        parser.feed(b"data: " + b"a" * 50)
        with pytest.raises(ProtocolError, match="longer than 64"):
            parser.feed(b"a" * 50)
