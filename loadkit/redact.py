"""Secrets never written: mask passwords, tokens, session ids and API keys in any text loadkit shows.

Why: failure texts carry what the server said, and a server under test may echo the request (with
the password), answer with a token, or put an API key in an error message. Those texts end up in
Locust's ``_failures.csv``, the console, the web UI, logs and ``report.html`` — files that are
shared, attached to tickets and committed. Every failure a loadkit user reports goes through
:func:`redact` first (:mod:`loadkit.users.measure`).

Masked: the value of any key that names a secret (``password``, ``token``, ``sessionId``,
``api_key``, ``authorization``, … in JSON, form or header syntax), JWTs, long hex strings (session
ids are 32 or 64 hex digits) and every literal secret the user registered (its password, its
current token). Pure code.
"""

from __future__ import annotations

import re
from typing import Iterable

MASK = "***"
_KEY = (r"(?:password|passwd|pwd|token|access_?token|refresh_?token|auth_?token|session_?id|sessionid|"
        r"api_?key|apikey|secret|authorization|x-auth-token|x-session-id)")
# key, separator, optional quote; the value runs to the closing quote or a delimiter
_KEYED = re.compile(r"""(?i)(["']?\b""" + _KEY + r"""\b["']?\s*[:=]\s*(?:bearer\s+)?)(["']?)([^"'\s,;&}\]]+)""")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
_LONG_HEX = re.compile(r"\b[0-9a-fA-F]{32,}\b")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret in it replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, MASK)
    text = _KEYED.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _JWT.sub(MASK, text)
    return _LONG_HEX.sub(MASK, text)


def redact_exception(exc: BaseException, secrets: Iterable[str] = ()) -> BaseException:
    """Mask the string arguments of ``exc`` in place (Locust shows ``repr(exc)``, built from them);
    returns ``exc``."""
    secrets = tuple(secrets)
    args = exc.args
    if any(isinstance(a, str) for a in args):
        exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in args)
    return exc
