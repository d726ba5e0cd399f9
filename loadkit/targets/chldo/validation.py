"""Checking one incoming text message of the chldo server: JSON, action, fields, space.

The texts of the documented errors are the vendor's, verbatim (``loadkit.protocols.chldo``); the few
cases the page does not cover (bad JSON, unknown action, wrong types) get texts of our own in the
same frame shape, so a client can always classify them as validation errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from loadkit.protocols.chldo import (
    ACTION_SENDMSG,
    ERR_API_KEY_NOT_EXIST,
    ERR_API_KEY_NOT_USABLE,
    ERR_API_KEY_REQUIRED,
    ERR_MSG_REQUIRED,
    ERR_RETURN_VOICE,
    ERR_ROOM_UID_REQUIRED,
    ERR_USER_ID_REQUIRED,
)
from loadkit.targets.chldo.config import Space

ERR_NOT_JSON = "message is not valid JSON"
ERR_NOT_OBJECT = "message must be a JSON object"
ERR_UNKNOWN_ACTION = "unknown action: {action}"


@dataclass(frozen=True)
class SendMsg:
    """A request that passed every check."""

    room_uid: str
    user_id: str
    msg: str
    space: Space
    return_voice: int
    no_history: bool


class Invalid(Exception):
    """The request is refused; ``str(exc)`` is the ``msg`` of the error frame."""


def _present(value: Any) -> bool:
    return value is not None and value != ""


def parse_request(text: str, spaces: dict[str, Space], *, require_msg: bool) -> SendMsg:
    """Check order: JSON, action, api_key, msg, room_uid, user_id, key exists, key usable, return_voice."""
    try:
        req = json.loads(text)
    except ValueError:
        raise Invalid(ERR_NOT_JSON) from None
    if not isinstance(req, dict):
        raise Invalid(ERR_NOT_OBJECT)
    action = req.get("action")
    if action != ACTION_SENDMSG:
        shown = action if isinstance(action, str) else json.dumps(action)
        raise Invalid(ERR_UNKNOWN_ACTION.format(action=shown[:64]))
    api_key = req.get("api_key")
    if not _present(api_key):
        raise Invalid(ERR_API_KEY_REQUIRED)
    msg = req.get("msg")
    if require_msg and not _present(msg):
        raise Invalid(ERR_MSG_REQUIRED)
    if msg is not None and not isinstance(msg, str):
        raise Invalid("msg must be a string")
    room_uid = req.get("room_uid")
    if not _present(room_uid):
        raise Invalid(ERR_ROOM_UID_REQUIRED)
    if not isinstance(room_uid, str):
        raise Invalid("room_uid must be a string")
    user_id = req.get("user_id")
    if not _present(user_id):
        raise Invalid(ERR_USER_ID_REQUIRED)
    if not isinstance(user_id, str):
        raise Invalid("user_id must be a string")
    space = spaces.get(api_key) if isinstance(api_key, str) else None
    if space is None:
        raise Invalid(ERR_API_KEY_NOT_EXIST)
    if not space.usable:
        raise Invalid(ERR_API_KEY_NOT_USABLE)
    rv = req.get("return_voice")
    if rv is None:
        return_voice = space.return_voice
    elif type(rv) is int and rv in (0, 1):
        return_voice = rv
    elif rv in ("0", "1"):
        return_voice = int(rv)
    else:
        raise Invalid(ERR_RETURN_VOICE)
    return SendMsg(room_uid, user_id, msg or "", space, return_voice, req.get("no_history") is True)
