"""Unit tests of the chldo sans-I/O cores: turn state machine, WebSocket frame decoder, fake LLM,
request validation and server config. Recorded sequences come verbatim from the vendor page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadkit.protocols.chldo import VALIDATION_ERRORS, build_sendmsg
from loadkit.protocols.chldo_turn import (
    ChldoConnectionLost,
    ChldoProtocolError,
    ChldoSession,
    ChldoStreamError,
    ChldoTimeout,
    ChldoValidationError,
    replay,
)
from loadkit.protocols.wsframe import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    FrameDecoder,
    WireError,
    encode_frame,
    parse_close,
)

FIX = Path(__file__).parent / "fixtures" / "chldo"


def lines(name: str) -> list[str]:
    return (FIX / name).read_text(encoding="utf-8").splitlines()


# ---- recorded sequences from the vendor page ------------------------------------------------------
def test_seed_success_with_voice():
    frames = lines("seed_success_voice.jsonl")
    turn = replay(frames, step=0.001)
    assert turn.ok and turn.done
    assert turn.stream_uid == "BfS806fFPYoi00yn9cJx04X0b"
    assert turn.chunks == 36
    assert turn.text == "안녕하세요, 김철수님! 반갑습니다 울산 남구에서의 특별한 기억이 있으신가요? 기억을 그림으로 담아드리려고 합니다"
    assert turn.chars == len(turn.text)
    assert turn.sentences == 3 and turn.voices == 3
    assert turn.voice_seconds == pytest.approx(2.688 + 3 + 2.472)
    assert turn.info_frames == 6  # history x2, memory x2, think x2
    # frame i (0-based) is stamped (i+1) ms after the send
    first_stream = next(i for i, f in enumerate(frames) if '"on_chat_model_stream"' in f)
    first_voice = next(i for i, f in enumerate(frames) if '"voice_ready"' in f)
    assert turn.time_to_start_ms == pytest.approx(1.0)
    assert turn.ttft_ms == pytest.approx(first_stream + 1.0)
    assert turn.first_voice_ms == pytest.approx(first_voice + 1.0)
    assert turn.sendmsg_ms == pytest.approx(len(frames))
    assert turn.som_to_eom_ms == pytest.approx(len(frames) - 1.0)
    # a voice_ready frame sits between sentences: 35 gaps, two of them 2 ms, the rest 1 ms
    assert turn.gap_max_ms == pytest.approx(2.0)
    assert turn.gap_mean_ms == pytest.approx((35 + 2) / 35)
    assert turn.chunks_per_s == pytest.approx(35 / ((35 + 2) / 1000))


def test_seed_llm_error_is_in_stream_error():
    turn = replay(lines("seed_llm_error.jsonl"))
    assert turn.done
    assert isinstance(turn.error, ChldoStreamError)
    assert str(turn.error) == "Error code: 404 - {'status': 'failure', 'message': 'API_KEY does not exist.'}"
    assert turn.langchain_events == 5 and turn.chunks == 0
    assert turn.stream_uid is None  # this older frame format carries none; frames still belong to the turn


def test_seed_credit_error_is_in_stream_error():
    turn = replay(lines("seed_credit_error.jsonl"))
    assert turn.done
    assert isinstance(turn.error, ChldoStreamError)
    assert str(turn.error) == "현재 크레딧은 0 입니다. 크레딧이 100원 이상 필요합니다."
    assert turn.langchain_events == 4


@pytest.mark.parametrize("frame", lines("seed_validation_errors.jsonl"))
def test_seed_validation_errors(frame):
    turn = replay([frame])
    assert turn.done and isinstance(turn.error, ChldoValidationError)
    assert str(turn.error) == json.loads(frame)["msg"]
    assert str(turn.error) in VALIDATION_ERRORS


def test_seed_request_matches_builder():
    req = json.loads((FIX / "seed_request.json").read_text(encoding="utf-8"))
    built = build_sendmsg(api_key=req["api_key"], room_uid=req["room_uid"], user_id=req["user_id"], msg=req["msg"])
    assert built == req


# ---- synthetic sequences for every violation ----------------------------------------------------
def f(status, suid="S1", **kw):
    d = {"status": status, "connection_id": "C", "stream_uid": suid, "msgtype": "info", **kw}
    return json.dumps(d, ensure_ascii=False)


def tok(text, suid="S1", sent="A"):
    return json.dumps({"status": "stream", "stream_uid": suid, "sent_uid": sent, "event": "on_chat_model_stream",
                       "data": {"chunk": {"content": text}}, "msg": text, "msgtype": "stream"})


def test_unknown_stream_uid_is_a_violation_but_turn_ends_at_its_end():
    turn = replay([f("START"), tok("a"), tok("x", suid="OTHER"), tok("b"), f("END")])
    assert turn.done and isinstance(turn.error, ChldoProtocolError)
    assert "unknown stream_uid OTHER" in str(turn.error)
    assert turn.chunks == 2  # the foreign frame is not counted


def test_end_without_start():
    turn = replay([f("think", msg="x"), f("END")])
    assert turn.done and isinstance(turn.error, ChldoProtocolError)
    assert str(turn.error) == "END without START"


def test_non_json_and_non_object_frames():
    turn = replay([f("START"), "not json {", tok("a"), f("END")])
    assert isinstance(turn.error, ChldoProtocolError) and str(turn.error).startswith("non-JSON frame: not json")
    turn = replay([f("START"), "[1, 2]", f("END")])
    assert isinstance(turn.error, ChldoProtocolError) and "not a JSON object" in str(turn.error)


def test_stream_before_start_and_second_start():
    assert "before START" in str(replay([tok("a"), f("START"), f("END")]).error)
    assert "second START" in str(replay([f("START"), f("START"), f("END")]).error)


def test_frames_after_end_are_stray_not_the_next_turns():
    s = ChldoSession()
    t1 = s.begin(0.0)
    for i, fr in enumerate([f("START"), tok("a"), f("END")]):
        s.on_text(fr, 0.1 * (i + 1))
    assert t1.ok
    s.on_text(tok("late"), 1.0)  # between turns
    assert len(s.stray) == 1 and "frame after END" in str(s.stray[0])
    t2 = s.begin(2.0)
    s.on_text(f("START", suid="S2"), 2.1)
    s.on_text(tok("later"), 2.2)  # old stream, during the new turn
    s.on_text(tok("b", suid="S2"), 2.3)
    assert s.on_text(f("END", suid="S2"), 2.4) is t2
    assert t2.ok and t2.chunks == 1
    assert len(s.stray) == 2 and "frame after END of stream S1" in str(s.stray[1])


def test_error_after_start_is_stream_error_and_waits_for_end():
    err = json.dumps({"status": "connected", "msg": "boom", "msgtype": "error"})
    s = ChldoSession()
    t = s.begin(0.0)
    assert s.on_text(f("START"), 0.1) is None
    assert s.on_text(err, 0.2) is None and not t.done
    assert s.on_text(f("END"), 0.3) is t
    assert isinstance(t.error, ChldoStreamError) and str(t.error) == "boom"


def test_timeout_and_connection_loss():
    s = ChldoSession()
    t = s.begin(0.0)
    s.on_text(f("START"), 0.1)
    s.on_text(tok("a"), 0.2)
    assert s.timed_out(5, 5.0) is t
    assert isinstance(t.error, ChldoTimeout) and "1 chunks" in str(t.error)
    s = ChldoSession()
    t = s.begin(0.0)
    assert s.connection_lost("server closed the connection: code 1011", 0.5) is t
    assert isinstance(t.error, ChldoConnectionLost) and "1011" in str(t.error)
    assert s.connection_lost("again", 0.6) is None


def test_binary_frame_and_unclassifiable_frame():
    s = ChldoSession()
    t = s.begin(0.0)
    s.on_binary(b"\x00\x01", 0.1)
    assert isinstance(t.error, ChldoProtocolError) and "binary frame" in str(t.error)
    assert "unclassifiable" in str(replay([f("START"), json.dumps({"foo": 1}), f("END")]).error)


def test_langchain_raw_events_and_raw_stream_event_are_counted():
    raw_tok = json.dumps({"event": "on_chat_model_stream", "data": {"chunk": {"content": "hi"}}, "run_id": "r"})
    chain = json.dumps({"event": "on_chain_stream", "data": {"chunk": {"messages": []}}, "run_id": "r"})
    turn = replay([f("START"), raw_tok, chain, f("END")])
    assert turn.ok and turn.chunks == 1 and turn.chars == 2 and turn.langchain_events == 1


def test_sentences_counted_by_sent_uid_and_single_sent_uid():
    turn = replay([f("START"), tok("a", sent="A"), tok("b", sent="A"), tok("c", sent="B"), f("END")])
    assert turn.sentences == 2
    turn = replay([f("START"), tok("a", sent=None), tok("b", sent=None), f("END")])
    assert turn.sentences == 1


def test_cannot_begin_while_in_flight():
    s = ChldoSession()
    s.begin(0.0)
    with pytest.raises(RuntimeError):
        s.begin(1.0)


# ---- WebSocket frame decoder ------------------------------------------------------------------------
def test_decoder_handles_all_length_forms_and_split_feeds():
    payloads = [b"x" * 5, b"y" * 300, b"z" * 70000]
    wire = b"".join(encode_frame(OP_TEXT, p) for p in payloads)
    dec = FrameDecoder()
    got = []
    for i in range(0, len(wire), 777):  # arbitrary cut points, including inside headers
        got += dec.feed(wire[i:i + 777])
    assert got == [(OP_TEXT, p) for p in payloads]
    assert dec.buffered == 0


@pytest.mark.parametrize("n", [0, 1, 125, 126, 300, 65535, 65536])
@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_decoder_one_whole_frame_per_read(op, n):
    # the common case of a request/answer client takes a shortcut; it must agree with the long way
    payload = bytes(i % 251 for i in range(n))
    dec = FrameDecoder()
    assert dec.feed(encode_frame(op, payload)) == [(op, payload)]
    assert dec.feed(encode_frame(op, payload) + encode_frame(op, b"!")) == [(op, payload), (op, b"!")]
    assert dec.buffered == 0
    if n:
        with pytest.raises(WireError, match="exceeds"):
            FrameDecoder(max_message=n - 1).feed(encode_frame(op, payload))


@pytest.mark.parametrize("n", [0, 1, 125, 126, 300, 65535, 65536])
def test_whole_text_agrees_with_feed(n):
    # the chldo client's shortcut for one whole text frame per read: the payload exactly when feed
    # would return that one text message, None for everything feed must decide
    payload = bytes(i % 251 for i in range(n))
    frame = encode_frame(OP_TEXT, payload)
    dec = FrameDecoder()
    if n < 65536:
        assert dec.whole_text(frame) == payload
    else:  # 64-bit length form: left to feed
        assert dec.whole_text(frame) is None
    assert dec.feed(frame) == [(OP_TEXT, payload)]
    assert dec.whole_text(frame + encode_frame(OP_TEXT, b"!")) is None  # two frames
    assert dec.whole_text(encode_frame(OP_BINARY, payload)) is None
    assert dec.whole_text(encode_frame(OP_TEXT, payload, fin=False)) is None
    if n:
        assert dec.whole_text(frame[:-1]) is None  # not complete yet
        assert FrameDecoder(max_message=n - 1).whole_text(frame) is None  # feed raises the limit
    assert dec.whole_text(b"\x81") is None
    assert dec.buffered == 0


def test_whole_text_defers_to_feed_when_bytes_are_buffered_or_a_message_is_fragmented():
    dec = FrameDecoder()
    frame = encode_frame(OP_TEXT, b"hello")
    assert dec.feed(frame[:3]) == []
    assert dec.whole_text(frame) is None  # 3 bytes of a frame wait: feed must join them
    dec = FrameDecoder()
    assert dec.feed(encode_frame(OP_TEXT, b"ab", fin=False)) == []
    assert dec.whole_text(frame) is None  # a new text frame inside a fragmented message: feed's error
    with pytest.raises(WireError):
        dec.feed(frame)
    masked = bytes([0x81, 0x80 | 5]) + b"\0\0\0\0" + b"hello"
    assert FrameDecoder().whole_text(masked) is None  # feed's "masked frame from server"
    # a large frame is being collected: a read that looks like a whole text frame is its payload
    big = encode_frame(OP_TEXT, b"x" * 300_000)
    dec = FrameDecoder()
    assert dec.feed(big[:100_000]) == []
    middle = encode_frame(OP_TEXT, b"y" * 100)
    assert dec.whole_text(middle) is None
    rest = big[100_000:]
    assert dec.feed(rest[:50]) == [] and dec.feed(rest[50:]) == [(OP_TEXT, b"x" * 300_000)]


def test_decoder_byte_by_byte():
    wire = encode_frame(OP_TEXT, "안녕".encode()) + encode_frame(OP_PING, b"p")
    dec = FrameDecoder()
    got = []
    for b in wire:
        got += dec.feed(bytes([b]))
    assert got == [(OP_TEXT, "안녕".encode()), (OP_PING, b"p")]


def test_decoder_reassembles_fragments_with_control_frame_inside():
    wire = (encode_frame(OP_TEXT, b"ab", fin=False) + encode_frame(OP_PING, b"!")
            + encode_frame(OP_CONT, b"cd", fin=False) + encode_frame(OP_CONT, b"ef"))
    assert FrameDecoder().feed(wire) == [(OP_PING, b"!"), (OP_TEXT, b"abcdef")]


@pytest.mark.parametrize("wire,text", [
    (bytes([0x81, 0x81, 1, 2, 3, 4, 0]), "masked"),
    (bytes([0xC1, 0x00]), "reserved bits"),
    (encode_frame(OP_CONT, b"x"), "continuation"),
    (bytes([0x09, 0x00]), "control"),
    (bytes([0x83, 0x00]), "unknown data opcode"),
    (bytes([0x8B, 0x00]), "unknown control opcode"),
    (encode_frame(OP_TEXT, b"a", fin=False) + encode_frame(OP_BINARY, b"b"), "inside a fragmented"),
])
def test_decoder_rejects_bad_framing(wire, text):
    with pytest.raises(WireError, match=text):
        FrameDecoder().feed(wire)


def test_decoder_size_limit():
    with pytest.raises(WireError, match="exceeds"):
        FrameDecoder(max_message=1000).feed(encode_frame(OP_TEXT, b"x" * 2000)[:10])
    wire = encode_frame(OP_TEXT, b"x" * 600, fin=False) + encode_frame(OP_CONT, b"x" * 600)
    with pytest.raises(WireError, match="exceeds"):
        FrameDecoder(max_message=1000).feed(wire)


def test_parse_close():
    assert parse_close(encode_frame(OP_CLOSE, b"\x03\xe9bye")[2:]) == (1001, "bye")
    assert parse_close(b"") == (None, "")


# ---- what a hostile server may send (issue #15; the live suite is tests/test_hostile_chldo.py) ----------
def _with(frame: str, **fields) -> str:
    return json.dumps({**json.loads(frame), **fields})


@pytest.mark.parametrize("bad, text", [
    (_with(f("think"), status=5), "status is not a string: 5"),
    (_with(f("think"), status=[1]), "status is not a string: [1]"),
    (_with(f("think"), msgtype=5), "msgtype is not a string: 5"),
    (_with(f("think"), msgtype={"a": 1}), "msgtype is not a string: {'a': 1}"),
    (_with(tok("x"), data=[1]), "data.chunk is not an object: [1]"),
    (_with(tok("x"), data={"chunk": "x"}), "data.chunk is not an object: 'x'"),
    (_with(f("voice_ready", sent_uid="A"), voice_length="2.5"), "voice_length is not a number of seconds: '2.5'"),
    (_with(f("voice_ready", sent_uid="A"), voice_length=-1), "voice_length is not a number of seconds: -1"),
    (_with(f("voice_ready", sent_uid="A"), voice_length=True), "voice_length is not a number of seconds: True"),
    (_with(tok("x"), stream_uid=7), "unknown stream_uid 7 (turn is S1)"),
])
def test_a_field_of_the_wrong_type_is_a_protocol_violation_and_the_turn_still_ends(bad, text):
    turn = replay([f("START"), tok("a"), bad, tok("b"), f("END")])
    assert turn.done and isinstance(turn.error, ChldoProtocolError) and str(turn.error) == text


@pytest.mark.parametrize("tolerated", [
    _with(f("think"), msgtype=None), _with(tok("x"), stream_uid=None), _with(tok("x"), data=None),
    _with(f("voice_ready", sent_uid="A"), voice_length=None), _with(tok("x"), sent_uid=[1]),
])
def test_null_is_an_absent_field(tolerated):
    assert replay([f("START"), tok("a"), tolerated, f("END")]).ok


def test_a_stream_uid_that_is_not_a_string_fails_the_turn_which_still_ends():
    turn = replay([_with(f("START"), stream_uid=9), _with(tok("a"), stream_uid=9), _with(f("END"), stream_uid=9)])
    assert turn.done and str(turn.error) == "stream_uid is not a string: 9"


def test_error_texts_of_any_type_are_kept_and_bounded():
    err = {"status": "connected", "msgtype": "error"}
    assert str(replay([json.dumps({**err, "msg": [1, 2]})]).error) == "[1, 2]"
    assert str(replay([json.dumps({**err, "msg": None})]).error) == "None"
    long = replay([json.dumps({**err, "msg": "x" * 100_000})]).error
    assert isinstance(long, ChldoValidationError) and len(str(long)) == 301 and str(long).endswith("x…")


def test_huge_or_deep_frames_give_a_short_text():
    deep = '{"a":' + "[" * 50_000 + "]" * 50_000 + "}"  # a plain repr would raise RecursionError
    turn = replay([f("START"), deep, f("END")])
    assert isinstance(turn.error, ChldoProtocolError) and len(str(turn.error)) < 200
    huge = replay([f("START"), "<" + "x" * 10_000_000, f("END")]).error
    assert str(huge) == "non-JSON frame: <" + "x" * 79 + "…"
    wide = replay([f("START"), json.dumps({"k%d" % i: "v" * 1000 for i in range(10_000)}), f("END")]).error
    assert str(wide).startswith("unclassifiable frame: {'k0': 'vvv") and len(str(wide)) < 200


def test_decoder_collects_a_large_frame_once_and_reports_it():
    seen = []
    payload = bytes(i % 251 for i in range(3 << 20))
    wire = encode_frame(OP_TEXT, payload) + encode_frame(OP_TEXT, b"next")
    dec = FrameDecoder(on_large=seen.append)
    got = []
    for i in range(0, len(wire), 65536):
        got += dec.feed(wire[i:i + 65536])
        if not got:
            assert 0 < dec.buffered <= i + 65536
    assert got == [(OP_TEXT, payload), (OP_TEXT, b"next")] and dec.buffered == 0
    assert seen == [len(payload) + 10]  # header included; reported once
    small = FrameDecoder(on_large=seen.append)
    wire = encode_frame(OP_TEXT, b"y" * 200_000)
    assert small.feed(wire[:1000]) == [] and small.feed(wire[1000:]) == [(OP_TEXT, b"y" * 200_000)]
    assert seen == [len(payload) + 10]  # under 1 MiB: not reported
    pieces = [encode_frame(OP_TEXT if i == 0 else OP_CONT, b"z" * 60_000, fin=i == 19) for i in range(20)]
    assert FrameDecoder(on_large=seen.append).feed(b"".join(pieces)) == [(OP_TEXT, b"z" * 1_200_000)]
    assert seen == [len(payload) + 10, 1_200_000]  # a message of small fragments: reported once, whole


def test_decoder_limit_applies_to_a_large_frame_before_it_is_buffered():
    dec = FrameDecoder(max_message=1 << 20)
    with pytest.raises(WireError, match="frame of 2097152 bytes exceeds the 1048576-byte limit"):
        dec.feed(encode_frame(OP_TEXT, b"x" * (2 << 20))[:65536])
