"""A ``json``-module look-alike backed by orjson when it is installed.

python-socketio/engineio call ``json.dumps(obj, separators=...)`` and ``json.loads(text)`` for every
packet; orjson does both several times faster than the stdlib, which matters on the chatMessage
hot path. Output is compact UTF-8 JSON (like Jackson), which every client parses the same way.
"""

from __future__ import annotations

import json as _json
from typing import Any

JSONDecodeError = _json.JSONDecodeError

try:  # pragma: no cover - depends on the environment
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None


if _orjson is not None:
    _odumps = _orjson.dumps
    _oloads = _orjson.loads
    _OERR = _orjson.JSONEncodeError
    _ODERR = _orjson.JSONDecodeError

    def dumps(obj: Any, **kwargs: Any) -> str:
        try:
            return _odumps(obj).decode()
        except (_OERR, TypeError):  # non-str keys, ints over 64 bits, ...: let the stdlib try
            return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    def loads(s: str | bytes, **kwargs: Any) -> Any:
        try:
            return _oloads(s)
        except _ODERR:
            # orjson refuses a few inputs the stdlib (and Jackson) accept, e.g. huge integers
            return _json.loads(s)

else:  # pragma: no cover

    def dumps(obj: Any, **kwargs: Any) -> str:
        return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    def loads(s: str | bytes, **kwargs: Any) -> Any:
        return _json.loads(s)
