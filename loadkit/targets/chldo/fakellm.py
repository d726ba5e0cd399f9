"""A deterministic fake LLM for the chldo reference server: same prompt, same answer, every time.

Answers are cut from a small Korean and English corpus (Korean when the prompt contains Hangul),
starting at a sentence chosen by a CRC of the prompt, and made exactly ``answer_tokens`` tokens long
by walking on through the corpus. Tokens look like an LLM's: a leading space glued to the next piece,
Hangul in one- or two-syllable pieces, English in whole words, punctuation on its own. Answers are
cached with each token already JSON-encoded, so streaming a token costs one string concatenation.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

KO_CORPUS = (
    "안녕하세요, 김철수님! 반갑습니다.",
    "울산 남구에서의 특별한 기억이 있으신가요?",
    "기억을 그림으로 담아드리려고 합니다.",
    "오늘은 날씨가 맑아서 산책하기 좋은 날이에요.",
    "궁금하신 점이 있으면 언제든지 물어봐 주세요.",
    "어린 시절 살던 동네의 골목길이 아직도 생각나시나요?",
    "그때 함께했던 친구들의 이름을 기억하시나요?",
    "제가 이야기를 차근차근 정리해 드릴게요.",
    "잠시만 기다려 주시면 바로 답변을 드리겠습니다.",
    "좋은 하루 보내시고 다음에 또 이야기 나눠요.",
)
EN_CORPUS = (
    "Hello, it is nice to meet you!",
    "Do you have a special memory from the town where you grew up?",
    "I would like to turn that memory into a picture for you.",
    "The weather is clear today, which makes it a good day for a walk.",
    "Feel free to ask me anything whenever you are curious.",
    "Do you still remember the narrow streets of your old neighborhood?",
    "Tell me the names of the friends who were with you back then.",
    "I will put your story together step by step.",
    "Please wait a moment and I will answer right away.",
    "Have a good day, and let us talk again soon.",
)

_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_TOKEN = re.compile(r" ?[\uac00-\ud7a3]{1,2}| ?[A-Za-z0-9']+| ?[^\s\uac00-\ud7a3A-Za-z0-9']")
# seconds of speech per character, fitted to the three voice_ready frames on the vendor page
_VOICE_S_PER_CHAR = {"ko": 0.13, "en": 0.06}


def tokenize(text: str) -> list[str]:
    """Split a sentence into LLM-like chunks; ``"".join(tokenize(s)) == s`` for single-spaced text."""
    return _TOKEN.findall(text)


@dataclass(frozen=True)
class Sentence:
    text: str  # the sentence exactly as its tokens concatenate (leading space included)
    tokens: tuple[str, ...]
    tokens_json: tuple[str, ...]  # each token as a JSON string literal, ready to splice into a frame
    voice_length: float  # seconds of the (fake) synthesized speech


@dataclass(frozen=True)
class Answer:
    lang: str
    sentences: tuple[Sentence, ...]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.sentences)

    @property
    def token_count(self) -> int:
        return sum(len(s.tokens) for s in self.sentences)


class FakeLLM:
    """``answer(prompt)`` → an :class:`Answer` of exactly ``answer_tokens`` tokens."""

    def __init__(self, answer_tokens: int = 40, split_sentences: bool = True) -> None:
        if answer_tokens < 1:
            raise ValueError("answer_tokens must be at least 1")
        self.answer_tokens = answer_tokens
        self.split_sentences = split_sentences
        self._answer = lru_cache(maxsize=256)(self._build)

    def answer(self, prompt: str) -> Answer:
        lang = "ko" if _HANGUL.search(prompt or "") else "en"
        corpus = KO_CORPUS if lang == "ko" else EN_CORPUS
        start = zlib.crc32((prompt or "").encode("utf-8")) % len(corpus)
        return self._answer(lang, start)

    def _build(self, lang: str, start: int) -> Answer:
        corpus = KO_CORPUS if lang == "ko" else EN_CORPUS
        pieces: list[list[str]] = []
        need = self.answer_tokens
        i = start
        first = True
        while need > 0:
            text = corpus[i % len(corpus)]
            toks = tokenize(text if first else " " + text)[:need]
            need -= len(toks)
            pieces.append(toks)
            first = False
            i += 1
        if not self.split_sentences:
            pieces = [[t for p in pieces for t in p]]
        per_char = _VOICE_S_PER_CHAR[lang]
        sentences = []
        for toks in pieces:
            text = "".join(toks)
            sentences.append(Sentence(
                text=text,
                tokens=tuple(toks),
                tokens_json=tuple(json.dumps(t, ensure_ascii=False) for t in toks),
                voice_length=round(max(0.2, len(text.strip()) * per_char), 3),
            ))
        return Answer(lang, tuple(sentences))
