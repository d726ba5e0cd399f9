"""Vocabulary of the chldo ``sendmsg`` streaming WebSocket protocol (sans-I/O).

One place for every field name, status value and server text that both the reference server
(``loadkit.targets.chldo``) and the client core (``chldo_turn``) must agree on, so that a typo can't
make the load test measure a protocol the real service does not speak. Source: the vendor page
``shared/seeds/000_2415a7822491e669.txt`` (it wins over ``shared/spec/chldo-sendmsg.md``).
"""

from __future__ import annotations

from typing import Any

# ---- metrics -------------------------------------------------------------------------------------
#: per-turn figures the Locust user reports through ``response_time`` that are not latencies, with
#: their unit: reports and summaries must show them as such and keep them out of latency charts
TURN_FIGURE_UNITS = {"chunks": "chunks/turn", "chars": "chars/turn", "chunks_per_s": "chunks/s", "voice_ms": "ms of speech"}

# ---- request -----------------------------------------------------------------------------------
ACTION_SENDMSG = "sendmsg"

# ---- frame discriminators ------------------------------------------------------------------------
MSGTYPE_INFO = "info"
MSGTYPE_STREAM = "stream"
MSGTYPE_ERROR = "error"

STATUS_START = "START"
STATUS_RECEIVED = "received"
STATUS_HISTORY = "history"
STATUS_MEMORY = "memory"
STATUS_THINK = "think"
STATUS_STREAM = "stream"
STATUS_VOICE_READY = "voice_ready"
STATUS_END = "END"
STATUS_CONNECTED = "connected"  # carried by error frames

EVENT_CHAT_MODEL_STREAM = "on_chat_model_stream"
EVENT_CHAIN_START = "on_chain_start"
EVENT_CHAT_MODEL_START = "on_chat_model_start"
EVENT_CHAIN_STREAM = "on_chain_stream"
EVENT_CHAIN_END = "on_chain_end"
LANGCHAIN_RUN_EVENTS = (EVENT_CHAIN_START, EVENT_CHAT_MODEL_START, EVENT_CHAIN_STREAM, EVENT_CHAIN_END)

# ---- server texts (verbatim from the vendor page) -----------------------------------------------
SOM = "<SOM>"
EOM = "<EOM>"
MSG_RECEIVED = "메시지를 전달 받았습니다."
MSG_HISTORY_SEARCH = "대화 기억을 찾고 있습니다."
MSG_HISTORY_REPLAYED = "대화 기억을 재생하였습니다."
MSG_MEMORY_SEARCH = "저장된 메모리를 찾고 있습니다."
MSG_MEMORY_FOUND = "저장된 메모리를 찾았습니다. 핫워드 수신으로 설정된 메모리는 총 {n}개 입니다."
MSG_THINK_START = "생각을 시작합니다."
MSG_THINK_END = "생각이 끝났습니다."

ERR_API_KEY_REQUIRED = "api_key is required"
ERR_MSG_REQUIRED = "msg is required"
ERR_ROOM_UID_REQUIRED = "room_uid is required"
ERR_USER_ID_REQUIRED = "user_id is required"
ERR_API_KEY_NOT_EXIST = "api_key is not exist"
ERR_API_KEY_NOT_USABLE = "api_key is not usable"
ERR_RETURN_VOICE = "return_voice must be a number (0, 1, '0', or '1')"
VALIDATION_ERRORS = (
    ERR_API_KEY_REQUIRED,
    ERR_MSG_REQUIRED,
    ERR_ROOM_UID_REQUIRED,
    ERR_USER_ID_REQUIRED,
    ERR_API_KEY_NOT_EXIST,
    ERR_API_KEY_NOT_USABLE,
    ERR_RETURN_VOICE,
)
ERR_CREDIT = "현재 크레딧은 {credit} 입니다. 크레딧이 100원 이상 필요합니다."
MIN_CREDIT = 100

RETURN_VOICE_VALUES = (0, 1, "0", "1")


def build_sendmsg(
    *,
    api_key: str | None,
    room_uid: str | None,
    user_id: str | None,
    msg: str | None,
    return_voice: Any = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The request object; a field given as ``None`` is left out (that is how negative tests omit it)."""
    req: dict[str, Any] = {"action": ACTION_SENDMSG}
    for key, value in (("room_uid", room_uid), ("user_id", user_id), ("msg", msg), ("api_key", api_key),
                       ("return_voice", return_voice)):
        if value is not None:
            req[key] = value
    if extra:
        req.update(extra)
    return req


def format_credit(credit: float) -> str:
    """Credit as the server prints it: ``0`` not ``0.0``."""
    return str(int(credit)) if float(credit).is_integer() else f"{credit:g}"
