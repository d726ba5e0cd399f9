"""KTB message nonces, with no I/O: the content of every message a KTB user sends names its sender
and its send time (``delivery`` latency is measured from it), and can never contain a banned word.

Banned words are 4–10 character ``[a-z0-9]`` strings matched as case-insensitive substrings, so a
text whose every run of ASCII letters/digits is at most 3 characters long can never match one.
Nonces are built that way: numbers are written in groups of at most 3 digits.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from typing import Any, NamedTuple

# -------------------------------------------------------------------------------------- nonces
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]{4,}")
NONCE_PREFIX = "lk "
_NONCE_RE = re.compile(r"^lk ([0-9.]+)~([0-9.]+)~([0-9.]+)~([0-9.]+)~([0-9.]+)(?:$|\s)")


def max_alnum_run(text: str) -> int:
    """Length of the longest run of ASCII letters/digits (what a banned word could hide in)."""
    best = run = 0
    for ch in text:
        if ch.isascii() and ch.isalnum():
            run += 1
            if run > best:
                best = run
        else:
            run = 0
    return best


def is_banned_word_safe(text: str) -> bool:
    """True if no 4+ character ``[A-Za-z0-9]`` run exists, so no banned word can match."""
    return _ALNUM_RUN.search(text) is None


def _grp(n: int) -> str:
    """1763724452123456 -> '1.763.724.452.123.456' (runs of at most 3 digits)."""
    return format(int(n), ",").replace(",", ".")


def host_token() -> int:
    """A number naming this host's clock (a hash of the hostname): delivery latency is only
    computed between processes that share a clock."""
    return int.from_bytes(hashlib.blake2s(socket.gethostname().encode(), digest_size=3).digest(), "big")


class Nonce(NamedTuple):
    """A parsed nonce (a NamedTuple, not a frozen dataclass: parsed for every ``message`` a room
    member receives, and a frozen dataclass's ``__init__`` alone costs ~1 us)."""

    host: int
    pid: int
    user: int
    seq: int
    sent_us: int  # sender's time.time() at emit, in microseconds

    @property
    def sender(self) -> tuple[int, int, int]:
        return (self.host, self.pid, self.user)


def content_prefix(host: int, pid: int, user: int) -> str:
    """The constant part of one sender's nonces (computed once per user)."""
    return f"{NONCE_PREFIX}{_grp(host)}~{_grp(pid)}~{_grp(user)}~"


def make_content(host: int, pid: int, user: int, seq: int, sent_us: int, prefix: str | None = None) -> str:
    """Message content carrying a nonce; always banned-word safe.

    ``lk <host>~<pid>~<user>~<seq>~<sender time.time() in us>``, every number grouped by 3 digits
    with dots, e.g. ``lk 12.345~4.242~7~19~1.763.724.452.123.456``.
    """
    if prefix is None:
        prefix = content_prefix(host, pid, user)
    # runs once per message: the grouped seconds are cached (they change once a second), the
    # microseconds are always two groups of 3 digits
    sec, us = divmod(int(sent_us), 1_000_000)
    if sec != _SEC_CACHE[0]:
        _SEC_CACHE[0], _SEC_CACHE[1] = sec, (_grp(sec) + ".") if sec else ""
    head = _SEC_CACHE[1]
    if head:
        return "%s%s~%s%03d.%03d" % (prefix, _grp(seq) if seq > 999 else seq, head, us // 1000, us % 1000)
    return f"{prefix}{_grp(seq)}~{_grp(us)}"


_SEC_CACHE: list[Any] = [-1, ""]


def parse_content(content: Any) -> Nonce | None:
    """The nonce in a message written by ``make_content`` (None for anything else)."""
    if not isinstance(content, str) or not content.startswith(NONCE_PREFIX):
        return None
    m = _NONCE_RE.match(content)
    if m is None:
        return None
    host, pid, user, seq, sent = m.groups()
    return _new_nonce(Nonce, (int(host.replace(".", "")), int(pid.replace(".", "")), int(user.replace(".", "")),
                              int(seq.replace(".", "")), int(sent.replace(".", ""))))


_new_nonce = tuple.__new__


def default_pid() -> int:
    return os.getpid()
