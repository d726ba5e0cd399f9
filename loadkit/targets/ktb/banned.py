"""Banned-word check (``MESSAGE_REJECTED``), as the Java ``BannedWordChecker`` decides it.

Java lower-cases the message and tests ``contains(word)`` for each of 10 000 words: a plain,
case-insensitive substring match without word boundaries. Doing that scan in Python would cost
milliseconds per message, so this index answers the same question in about one set lookup per
character: every word is filed under its first ``k`` characters (``k`` = shortest word length);
only positions whose ``k``-gram is such a prefix look at the longer slices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

DEFAULT_LIST = Path(__file__).with_name("banned_words.txt")


class BannedWordChecker:
    """Answers "does this text contain any banned word (case-insensitive substring)?"."""

    def __init__(self, words: Iterable[str]) -> None:
        cleaned = {w.strip().lower() for w in words}
        cleaned.discard("")
        self.words: frozenset[str] = frozenset(cleaned)
        self._k = min((len(w) for w in self.words), default=0)
        self._prefixes: frozenset[str] = frozenset(w[: self._k] for w in self.words)
        self._lengths: tuple[int, ...] = tuple(sorted({len(w) for w in self.words}))

    @classmethod
    def from_file(cls, path: str | Path) -> "BannedWordChecker":
        """Load a list with one word a line (lines are trimmed, blank lines dropped, like Java)."""
        with open(path, encoding="utf-8") as f:
            return cls(f)

    def __len__(self) -> int:
        return len(self.words)

    def contains_banned(self, text: str | None) -> bool:
        """True when ``text`` contains a banned word; ``None`` or blank text never does."""
        if not text or not self.words:
            return False
        s = text.lower()
        k = self._k
        n = len(s)
        if n < k:
            return False
        prefixes = self._prefixes
        words = self.words
        lengths = self._lengths
        for i in range(n - k + 1):
            if s[i : i + k] in prefixes:
                for length in lengths:
                    if i + length > n:
                        break
                    if s[i : i + length] in words:
                        return True
        return False

    def first_match(self, text: str) -> str | None:
        """The first banned word found (for logs and tests); slow path, not used per message."""
        s = text.lower()
        for i in range(len(s)):
            for length in self._lengths:
                if s[i : i + length] in self.words:
                    return s[i : i + length]
        return None
