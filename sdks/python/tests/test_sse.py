"""The SSE decoder on its own: the parts of the format the server may use but a test run might
not happen to produce (multi-line data, comments, ids, CRLF)."""

from __future__ import annotations

from ezthrottle._transport import SSEDecoder
from ezthrottle.types import ServerEvent


def feed(text: str) -> list[ServerEvent]:
    d = SSEDecoder()
    out = []
    for line in text.splitlines():
        ev = d.feed(line)
        if ev is not None:
            out.append(ev)
    return out


def test_events_names_multiline_data_and_comments() -> None:
    text = (
        ": keep-alive\n\n"
        "event: attempt\ndata: {\"a\":\ndata:  1}\nid: 7\n\n"
        "data: plain\n\n"
        "event: ignored-without-data\n\n"
        "event:succeeded\r\ndata:{}\r\n\r\n"
    )
    evs = feed(text)
    assert evs == [
        ServerEvent("attempt", '{"a":\n 1}', "7"),
        ServerEvent("message", "plain", "7"),
        ServerEvent("succeeded", "{}", "7"),
    ]
    assert evs[0].json() == {"a": 1}


def test_incomplete_event_at_the_end_is_not_dispatched() -> None:
    assert feed("event: x\ndata: 1") == []
