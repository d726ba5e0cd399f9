"""Unit tests of the chldo reference server's pieces that need no socket: fake LLM, validation, config."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from loadkit.protocols.chldo import (
    ERR_API_KEY_NOT_EXIST,
    ERR_API_KEY_NOT_USABLE,
    ERR_API_KEY_REQUIRED,
    ERR_MSG_REQUIRED,
    ERR_RETURN_VOICE,
    ERR_ROOM_UID_REQUIRED,
    ERR_USER_ID_REQUIRED,
)
from loadkit.targets.chldo.config import ConfigError, Space, from_args, parse_spaces
from loadkit.targets.chldo.fakellm import FakeLLM, tokenize
from loadkit.targets.chldo.validation import Invalid, parse_request

SPACES = {"k": Space("k"), "off": Space("off", usable=False), "voice": Space("voice", return_voice=1)}


def req(**kw):
    base = {"action": "sendmsg", "room_uid": "r", "user_id": "u", "msg": "hi", "api_key": "k"}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize("kw,require_msg,text", [
    (dict(api_key=...), False, ERR_API_KEY_REQUIRED),
    (dict(api_key=""), False, ERR_API_KEY_REQUIRED),
    (dict(msg=...), True, ERR_MSG_REQUIRED),
    (dict(room_uid=...), False, ERR_ROOM_UID_REQUIRED),
    (dict(user_id=...), False, ERR_USER_ID_REQUIRED),
    (dict(api_key="nope"), False, ERR_API_KEY_NOT_EXIST),
    (dict(api_key="off"), False, ERR_API_KEY_NOT_USABLE),
    (dict(return_voice=2), False, ERR_RETURN_VOICE),
    (dict(return_voice="yes"), False, ERR_RETURN_VOICE),
    (dict(return_voice=True), False, ERR_RETURN_VOICE),
    (dict(action="hello"), False, "unknown action: hello"),
    (dict(room_uid=5), False, "room_uid must be a string"),
    (dict(msg=[1]), False, "msg must be a string"),
])
def test_validation_texts(kw, require_msg, text):
    with pytest.raises(Invalid) as exc:
        parse_request(req(**kw), SPACES, require_msg=require_msg)
    assert str(exc.value) == text


@pytest.mark.parametrize("raw,text", [("{", "message is not valid JSON"), ("[]", "message must be a JSON object")])
def test_validation_garbage(raw, text):
    with pytest.raises(Invalid, match=text):
        parse_request(raw, SPACES, require_msg=False)


def test_validation_accepts_and_defaults():
    ok = parse_request(req(msg=...), SPACES, require_msg=False)
    assert ok.msg == "" and ok.return_voice == 0
    assert parse_request(req(api_key="voice"), SPACES, require_msg=False).return_voice == 1
    assert parse_request(req(api_key="voice", return_voice="0"), SPACES, require_msg=False).return_voice == 0
    assert parse_request(req(return_voice=1), SPACES, require_msg=False).return_voice == 1


@pytest.mark.parametrize("n", [1, 7, 40, 333])
def test_fakellm_exact_token_count_and_determinism(n):
    llm = FakeLLM(n)
    a = llm.answer("안녕 반가워요")
    assert a.token_count == n and a.lang == "ko"
    assert a == FakeLLM(n).answer("안녕 반가워요")
    e = llm.answer("hello there")
    assert e.lang == "en" and e.token_count == n
    assert all(json.loads(j) == t for s in a.sentences for t, j in zip(s.tokens, s.tokens_json))
    assert all(s.voice_length > 0 for s in a.sentences)


def test_fakellm_sentence_split_switch():
    assert len(FakeLLM(60).answer("hi").sentences) > 1
    one = FakeLLM(60, split_sentences=False).answer("hi")
    assert len(one.sentences) == 1 and one.token_count == 60


def test_tokenize_roundtrip():
    for text in ("안녕하세요, 김철수님! 반갑습니다.", "Hello, it is nice to meet you!"):
        assert "".join(tokenize(text)) == text


def test_parse_spaces_good_and_bad():
    spaces = parse_spaces({"a": {"usable": True, "credit": 50, "return_voice": 1}, "b": {}})
    assert spaces["a"] == Space("a", True, 50.0, 1) and spaces["b"].usable
    for bad, text in [
        ([], "non-empty JSON object"),
        ({"a": 1}, "expected an object"),
        ({"a": {"usable": "yes"}}, "'usable' must be true or false"),
        ({"a": {"credit": "many"}}, "'credit' must be a number"),
        ({"a": {"return_voice": 2}}, "'return_voice' must be 0 or 1"),
        ({"a": {"colour": 1}}, "unknown field"),
    ]:
        with pytest.raises(ConfigError, match=text):
            parse_spaces(bad)


def _args(**kw):
    base = dict(host="127.0.0.1", port=0, first_token_ms=300.0, token_ms=20.0, answer_tokens=40, api_keys=None,
                llm_failure_rate=0.0, require_msg=False, langchain_events=False, no_sentence_split=False,
                max_frame_bytes=65536, max_streams_per_connection=4, ping_interval=20.0, processes=1)
    base.update(kw)
    return SimpleNamespace(**base)


def test_from_args_checks(tmp_path):
    assert from_args(_args()).spaces.keys() == {"demo-key"}
    for kw, text in [(dict(port=70000), "--port"), (dict(token_ms=-1.0), "--token-ms"),
                     (dict(answer_tokens=0), "--answer-tokens"), (dict(llm_failure_rate=1.5), "--llm-failure-rate"),
                     (dict(api_keys=str(tmp_path / "missing.json")), "cannot read")]:
        with pytest.raises(ConfigError, match=text):
            from_args(_args(**kw))
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        from_args(_args(api_keys=str(bad)))
