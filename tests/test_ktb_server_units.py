"""Unit tests of the KTB server's pure parts: banned-word index, rate limiter, JSON shapes, store paging."""

from __future__ import annotations

import random
import string

from loadkit.targets.ktb.auth import FixedWindowLimiter, check_password, hash_password
from loadkit.targets.ktb.banned import DEFAULT_LIST, BannedWordChecker
from loadkit.targets.ktb.store import Store
from loadkit.targets.ktb.views import iso_instant, local_datetime_array

ALPHABET = string.ascii_lowercase + string.digits


def _random_list(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(4, 10))))
    return sorted(words)


def test_banned_words_match_java_contains_semantics_on_a_10k_list() -> None:
    words = _random_list(10_000)
    checker = BannedWordChecker(words)
    assert len(checker) == 10_000
    rnd = random.Random(99)
    texts = ["Load test message %d/20 from user %08x at 2025-11-%02dT12:%02d:%02d.%03dZ"
             % (i, rnd.getrandbits(32), rnd.randint(1, 28), rnd.randint(0, 59), rnd.randint(0, 59), rnd.randint(0, 999))
             for i in range(1000)]
    texts += ["".join(rnd.choice(ALPHABET + " ") for _ in range(rnd.randint(0, 80))) for _ in range(1000)]
    texts += [w.upper() + "!" for w in words[:50]] + ["x" + words[123] + "y", "", "   "]
    hits = 0
    for t in texts:
        naive = any(w in t.lower() for w in words)
        assert checker.contains_banned(t) is naive, t
        hits += naive
    assert hits >= 52  # the planted words, plus the odd accidental random hit


def test_banned_words_edge_cases(tmp_path) -> None:
    f = tmp_path / "w.txt"
    f.write_text("  Abc  \n\nlonger-word\nab\n")
    c = BannedWordChecker.from_file(f)
    assert c.words == {"abc", "longer-word", "ab"}
    assert c.contains_banned("xxABxx") and c.contains_banned("a LONGER-WORD.")
    assert not c.contains_banned("a") and not c.contains_banned(None) and not c.contains_banned("")
    assert not BannedWordChecker([]).contains_banned("anything")
    default = BannedWordChecker.from_file(DEFAULT_LIST)
    assert {"b3sig78jv", "9c0hej6x", "lbl276sz"} <= default.words  # the words the upstream Artillery test uses
    assert all(4 <= len(w) <= 10 and set(w) <= set(ALPHABET) for w in default.words)
    assert not default.contains_banned("Hello, this is a perfectly ordinary chat message.")


def test_fixed_window_limiter() -> None:
    lim = FixedWindowLimiter(3, 60)
    t0 = 1_000_000_000_000
    assert [lim.hit("u", t0 + i)[0] for i in range(4)] == [True, True, True, False]
    allowed, remaining, reset_s, retry = lim.hit("u", t0 + 30_000)
    assert not allowed and remaining == 0 and retry == 30 and reset_s == (t0 + 60_000) // 1000
    assert lim.hit("other", t0)[0]
    assert lim.hit("u", t0 + 60_000)[0]  # a new window


def test_passwords_and_time_formats() -> None:
    salt, h = hash_password("secret1")
    assert check_password("secret1", salt, h) and not check_password("secret2", salt, h)
    assert not check_password("x", None, None)
    assert iso_instant(1_700_000_000_000) == "2023-11-14T22:13:20Z"
    assert iso_instant(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    arr = local_datetime_array(1_700_000_000_123)
    assert len(arr) == 7 and arr[-1] == 123_000_000 and arr[0] == 2023


def test_store_paging_is_strict_and_timestamps_increase() -> None:
    s = Store(":memory:")
    u = s.add_user("ab", "a@b.c", "s", "h")
    r = s.add_room("room", u.id, None, None)
    msgs = [s.add_message(r, f"m{i}", u.id, "text") for i in range(100)]
    ts = [m.ts for m in msgs]
    assert ts == sorted(set(ts))  # strictly increasing inside a room
    assert len({m.id for m in msgs}) == 100 and all(len(m.id) == 24 for m in msgs)
    sizes, before = [], None
    while True:
        page, more = s.messages_before(r.id, before, 30)
        sizes.append((len(page), more))
        if not more:
            break
        before = page[0].ts
    assert sizes == [(30, True), (30, True), (30, True), (10, False)]
    page, more = s.messages_before(r.id, msgs[10].ts, 30)
    assert [m.content for m in page] == [f"m{i}" for i in range(10)] and not more
