"""tokenq's one Server-Sent Events parser, against the spec's event-stream interpretation
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tokenq import SSEDecoder, SSEEvent, aiter_sse, iter_sse


def events(stream: str, *, dataless: bool = False) -> list[SSEEvent]:
    """The events of a stream's text, read as an httpx response body."""
    body = httpx.Response(200, content=stream.encode()).iter_bytes()
    return list(iter_sse(body, dataless=dataless))


def test_data_lines_are_joined_with_newlines() -> None:
    assert events("data: one\ndata:two\ndata:  three\ndata\n\n") == [
        SSEEvent("message", "one\ntwo\n three\n")
    ]


def test_event_names_default_to_message() -> None:
    stream = "event: token\ndata: a\n\ndata: b\n\nevent:\ndata: c\n\n"
    assert [(e.event, e.data) for e in events(stream)] == [
        ("token", "a"),
        ("message", "b"),
        ("message", "c"),
    ]


def test_comments_and_unknown_fields_are_skipped() -> None:
    stream = ": ping\n\ndata: a\n: inside an event\nfoo: bar\n\n:\n\n"
    assert events(stream) == [SSEEvent("message", "a")]


def test_the_last_event_id_carries_over_to_later_events() -> None:
    stream = "id: 1\ndata: a\n\ndata: b\n\nid: 3\ndata: c\n\nid: 4\0\ndata: d\n\nid\ndata: e\n\n"
    assert [(e.id, e.data) for e in events(stream)] == [
        ("1", "a"),
        ("1", "b"),
        ("3", "c"),
        ("3", "d"),  # an id with a NUL in it is ignored
        ("", "e"),  # an empty id resets it
    ]


def test_retry_is_reported_when_it_is_a_number() -> None:
    stream = "retry: 3000\ndata: a\n\nretry: soon\ndata: b\n\n"
    assert [e.retry for e in events(stream)] == [3000, None]


def test_an_event_cut_off_before_its_blank_line_is_not_reported() -> None:
    assert events('id: 1\ndata: {"seq":1}\n\nid: 2\ndata: {"seq":2}\n') == [
        SSEEvent("message", '{"seq":1}', "1")
    ]
    # nor is a block that never had data, even when data-less blocks are asked for
    assert events("data: a\n\nevent: ping\n", dataless=True) == [SSEEvent("message", "a")]


def test_crlf_and_cr_line_endings() -> None:
    # sse-starlette ends its lines with CRLF; the spec allows a lone CR too
    stream = "id: 1\r\nevent: token\r\ndata: a\r\ndata: b\r\n\r\nevent: done\rdata: c\r\r"
    assert events(stream) == [SSEEvent("token", "a\nb", "1"), SSEEvent("done", "c", "1")]


def test_lines_end_at_cr_lf_or_crlf_only() -> None:
    # httpx's iter_lines() would also split at these; Dify's JSON and Chatchat's text hold them raw
    stream = 'data: {"answer": "a\u2028b"}\n\ndata: x\x0cy\x85z\x1ew\n\n'
    assert [e.data for e in events(stream)] == ['{"answer": "a\u2028b"}', "x\x0cy\x85z\x1ew"]


def test_the_body_may_arrive_in_pieces_of_any_size() -> None:
    # a CRLF, a multi-byte character and a field name each split across pieces
    body = "id: 1\r\ndata: h\u00e9\u2028llo\r\n\r\nevent: done\rdata: \u4e16\r\r\n\n".encode()
    expected = [SSEEvent("message", "h\u00e9\u2028llo", "1"), SSEEvent("done", "\u4e16", "1")]
    assert list(iter_sse([body])) == expected
    assert list(iter_sse(body[i : i + 1] for i in range(len(body)))) == expected
    for cut in range(len(body)):
        assert list(iter_sse([body[:cut], body[cut:]])) == expected, cut


def test_the_decoder_drops_each_lines_own_line_ending() -> None:
    decoder = SSEDecoder()
    fed = ["\ufeffdata: a\r\n", "data: b\r", "data: c\n", "\r\n"]
    assert [decoder.decode(line) for line in fed] == [
        None,
        None,
        None,
        SSEEvent("message", "a\nb\nc"),
    ]


def test_data_less_blocks_are_reported_only_when_asked() -> None:
    stream = "event: ping\n\ndata: a\n\n: comment only\n\nid: 7\n\n"
    assert events(stream) == [SSEEvent("message", "a")]
    # Dify's keep-alive is an `event: ping` block without data; comment-only blocks are never events
    assert events(stream, dataless=True) == [
        SSEEvent("ping", None),
        SSEEvent("message", "a"),
        SSEEvent("message", None, "7"),
    ]


def test_json_data() -> None:
    ping, token = events('event: ping\n\ndata: {"seq": 1}\n\n', dataless=True)
    assert token.json() == {"seq": 1}
    with pytest.raises(ValueError, match="without data"):
        ping.json()


def test_aiter_sse_reads_an_async_body() -> None:
    async def read() -> list[SSEEvent]:
        response = httpx.Response(200, content=b"id: 1\r\ndata: a\r\n\r\ndata: b\r\n")
        return [event async for event in aiter_sse(response.aiter_bytes())]

    assert asyncio.run(read()) == [SSEEvent("message", "a", "1")]
