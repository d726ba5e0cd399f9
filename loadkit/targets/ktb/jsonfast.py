"""A ``json``-module look-alike backed by orjson, for python-socketio/engineio's ``json`` hook.

python-socketio/engineio call ``json.dumps(obj, separators=...)`` and ``json.loads(text)`` for every
packet; orjson does both several times faster than the stdlib, which matters on the chatMessage
hot path. Output is compact UTF-8 JSON (like Jackson), which every client parses the same way.
"""

from __future__ import annotations

import json as _json
from typing import Any

import orjson as _orjson

JSONDecodeError = _json.JSONDecodeError

_odumps = _orjson.dumps
_oloads = _orjson.loads


def dumps(obj: Any, **kwargs: Any) -> str:
    try:
        return _odumps(obj).decode()
    except (_orjson.JSONEncodeError, TypeError):  # non-str keys, ints over 64 bits, ...: let the stdlib try
        return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def loads(s: str | bytes, **kwargs: Any) -> Any:
    try:
        return _oloads(s)
    except _orjson.JSONDecodeError:
        # orjson refuses a few inputs the stdlib (and Jackson) accept, e.g. huge integers
        return _json.loads(s)
