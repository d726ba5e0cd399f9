"""The KTB Chat vocabulary, shared by the load users and both reference-server variants: event
names, error codes and the servers' own texts (Korean as sent on the wire).

Why one module: the client recognises a failure by the exact text the server sends (many errors
carry no code), and the reference servers must send exactly those texts. Kept in one place, a
typo cannot make the client and the servers disagree silently.

Sources: docs/ktb-servers.md (Java, ``main``; Node, ``ktb-1st``/``ktb-2nd``).
"""

from __future__ import annotations

# ------------------------------------------------------------------------------- variants
JAVA = "java"
NODE = "node"
VARIANTS = (JAVA, NODE)

# ---------------------------------------------------------------------------- client events
JOIN_ROOM = "joinRoom"
LEAVE_ROOM = "leaveRoom"
CHAT_MESSAGE = "chatMessage"
FETCH_PREVIOUS = "fetchPreviousMessages"
MARK_READ = "markMessagesAsRead"
MESSAGE_REACTION = "messageReaction"
CLIENT_EVENTS = (JOIN_ROOM, LEAVE_ROOM, CHAT_MESSAGE, FETCH_PREVIOUS, MARK_READ, MESSAGE_REACTION)

# ---------------------------------------------------------------------------- server events
JOIN_ROOM_SUCCESS = "joinRoomSuccess"
JOIN_ROOM_ERROR = "joinRoomError"
MESSAGE = "message"
ERROR = "error"
PREVIOUS_LOADED = "previousMessagesLoaded"
MESSAGE_LOAD_START = "messageLoadStart"
PARTICIPANTS_UPDATE = "participantsUpdate"
USER_LEFT = "userLeft"
MESSAGES_READ = "messagesRead"
REACTION_UPDATE = "messageReactionUpdate"
DUPLICATE_LOGIN = "duplicate_login"
SESSION_ENDED = "session_ended"
#: Node ktb-2nd only: sent to every new socket / after a cache-miss join / on its failure / ping reply
CONNECT_SUCCESS = "connect_success"
INITIAL_MESSAGES_LOADED = "initialMessagesLoaded"
MESSAGE_LOAD_ERROR = "messageLoadError"
PONG = "pong"

#: events a client may receive without asking; never counted as "unknown"
KNOWN_SERVER_EVENTS = frozenset({
    MESSAGE, ERROR, JOIN_ROOM_SUCCESS, JOIN_ROOM_ERROR, PREVIOUS_LOADED, MESSAGE_LOAD_START,
    PARTICIPANTS_UPDATE, "roomCreated", "roomUpdated", "roomUpdate", "roomDeleted", USER_LEFT,
    MESSAGES_READ, REACTION_UPDATE, DUPLICATE_LOGIN, SESSION_ENDED,
    "aiMessageStart", "aiMessageChunk", "aiMessageComplete", "aiMessageError",
    CONNECT_SUCCESS, INITIAL_MESSAGES_LOADED, MESSAGE_LOAD_ERROR, PONG,
})

# ------------------------------------------------------------------------------ error codes
MESSAGE_ERROR = "MESSAGE_ERROR"
SESSION_EXPIRED = "SESSION_EXPIRED"
RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
MESSAGE_REJECTED = "MESSAGE_REJECTED"
LOAD_ERROR = "LOAD_ERROR"  # Java: {code: LOAD_ERROR}; Node: {type: LOAD_ERROR}

# ---------------------------------------------------------------------- texts: both variants
E_NO_DATA = "메시지 데이터가 없습니다."
E_SESSION = "세션이 만료되었습니다. 다시 로그인해주세요."  # Java SESSION_EXPIRED, Node MESSAGE_ERROR
E_NO_ROOM_INFO = "채팅방 정보가 없습니다."
E_ROOM_ACCESS = "채팅방 접근 권한이 없습니다."
E_ROOM_NOT_FOUND = "채팅방을 찾을 수 없습니다."
E_JOIN_FAILED = "채팅방 입장에 실패했습니다."
E_LEAVE = "채팅방 퇴장 중 오류가 발생했습니다."
E_READ = "읽음 상태 업데이트 중 오류가 발생했습니다."
E_REACTION = "리액션 처리 중 오류가 발생했습니다."
E_MSG_NOT_FOUND = "메시지를 찾을 수 없습니다."
E_FILE_DATA = "파일 데이터가 올바르지 않습니다."
E_FILE_ACCESS = "파일을 찾을 수 없거나 접근 권한이 없습니다."
SESSION_ENDED_DUP = "다른 기기에서 로그인하여 현재 세션이 종료되었습니다."

# ---------------------------------------------------------------------------- texts: Java
E_RATE = "메시지 전송 횟수 제한을 초과했습니다. 잠시 후 다시 시도해주세요."
E_BANNED = "금칙어가 포함된 메시지는 전송할 수 없습니다."
E_ID_NULL = "The given id must not be null"
E_REACTION_TYPE = "지원하지 않는 리액션 타입입니다."
E_CONNECT = "연결 처리 중 오류가 발생했습니다."  # sent on connect, belongs to no emit
E_JAVA_INVALID_SESSION = "Invalid session"

# ---------------------------------------------------------------------------- texts: Node
E_UNSUPPORTED_TYPE = "지원하지 않는 메시지 타입입니다."
E_TOO_LONG = "Message validation failed: content: 메시지는 10000자를 초과할 수 없습니다."
E_MAP_KEY = "Mongoose maps only support string keys, got undefined"
E_LOAD_RETRIES = "최대 재시도 횟수를 초과했습니다."
E_LOAD_FAILED = "이전 메시지를 불러오는 중 오류가 발생했습니다."
E_FORCE_LOGIN = "세션 종료 중 오류가 발생했습니다."
#: Node session validation texts (``validateSession``); the socket handshake sends them verbatim
E_NODE_INVALID_SESSION = "다른 기기에서 로그인되어 현재 세션이 만료되었습니다."
E_NODE_SESSION_NOT_FOUND = "세션을 찾을 수 없습니다."
E_NODE_SESSION_EXPIRED = "세션이 만료되었습니다."
NODE_CONNECT_ERRORS = ("Authentication error", "Invalid token", "Token expired", "User not found",
                       "Authentication failed", E_NODE_INVALID_SESSION, E_NODE_SESSION_NOT_FOUND,
                       E_NODE_SESSION_EXPIRED)
#: ktb-2nd sends these after a *successful* join / chat message (crash bugs, docs/ktb-servers.md Node §6.2): not failures
BENIGN_ERRORS = frozenset({"messages is not defined", "aiService.addRoomHistory is not a function"})

# ----------------------------------------------------------------------- system messages
def join_text(name: str) -> str:
    return f"{name}님이 입장하였습니다."


def leave_text(name: str) -> str:
    return f"{name}님이 퇴장하였습니다."


def disconnect_text(name: str) -> str:
    """Node only: the room's notice when a member's socket drops (any reason but a clean close)."""
    return f"{name}님이 연결이 끊어졌습니다."


# ------------------------------------------------------------------------------ REST texts
R_NOT_FOUND = "요청하신 리소스를 찾을 수 없습니다."
R_EMAIL_TAKEN = "이미 등록된 이메일입니다."
R_BAD_LOGIN = "이메일 또는 비밀번호가 올바르지 않습니다."
R_REGISTERED = "회원가입이 완료되었습니다."
R_NO_TOKEN = "인증 토큰이 없습니다."
R_BAD_TOKEN = "유효하지 않은 토큰입니다."
R_TOKEN_EXPIRED = "토큰이 만료되었습니다."
R_ROOM_NAME_REQUIRED = "방 이름은 필수입니다."
R_ALL_FIELDS = "모든 필드를 입력해주세요."
R_EMAIL_FORMAT = "올바른 이메일 형식이 아닙니다."
R_PASSWORD_LEN = "비밀번호는 6자 이상이어야 합니다."
R_LOGIN_FIELDS = "이메일과 비밀번호를 입력해주세요."
R_SERVER_ERROR = "서버 에러가 발생했습니다."
R_BAD_PASSWORD = "비밀번호가 일치하지 않습니다."
