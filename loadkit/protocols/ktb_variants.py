"""Per-variant KTB rules, with no I/O: which server variant is on the other end, and for each of
the six operations what completes it for the sender, what the witnesses (other members) see, and
how a re-join is made safe. Literal events and payloads in, decisions out.

Sources: docs/ktb-servers.md (Node §7: what a load client must do; and the Java sections).

Why these rules live here and not in the Locust user: they are facts about two servers, and each
one is checked by a unit test against literal payloads (tests/test_ktb_variants.py), which a
Locust run could only show indirectly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from loadkit.protocols import ktb_vocab as V

JAVA, NODE = V.JAVA, V.NODE


@dataclass(frozen=True)
class VariantRules:
    """What differs between the variants, as the client sees it (docs/ktb-servers.md Node §7)."""

    name: str
    #: the server acks a registered event when asked (Java: netty-socketio's automatic empty ack)
    acks: bool
    #: ``messagesRead`` reaches the sender too (Java: the whole room; Node: the others only)
    read_receipt_to_sender: bool
    #: any ``joinRoomSuccess`` for the room means the socket is in it (Java: the join runs in
    #: order after any leave and the short form re-adds the socket; Node: only the full form
    #: listing the user does, a short one is sent when a re-join overtook a leave)
    any_join_reply_counts: bool
    #: minimum seconds between one ``previousMessagesLoaded`` and the next fetch of the room
    #: (Node drops fetches within 300 ms of the previous reply without any answer)
    fetch_gap_s: float
    #: connect timeout floor: a Node handshake that evicts an older socket is held 10 s
    min_connect_timeout_s: float
    #: ``POST /api/auth/register`` answers a usable token and sessionId (Node logs in)
    register_logs_in: bool
    #: ``leaveRoom`` is complete when the server is done with the emit (Java, in order per
    #: socket) rather than only when a witness or REST shows it (Node, asynchronous)
    leave_in_order: bool


RULES: dict[str, VariantRules] = {
    JAVA: VariantRules(JAVA, acks=True, read_receipt_to_sender=True, any_join_reply_counts=True, fetch_gap_s=0.0,
                       min_connect_timeout_s=0.0, register_logs_in=False, leave_in_order=True),
    NODE: VariantRules(NODE, acks=False, read_receipt_to_sender=False, any_join_reply_counts=False,
                       fetch_gap_s=0.35, min_connect_timeout_s=15.0, register_logs_in=True, leave_in_order=False),
}


# ------------------------------------------------------------------------------- detection
def separate_socket_url(host: str, socket_url: str | None) -> bool:
    """REST and Socket.IO on two URLs (``--ktb-socket-url`` given and not ``--host`` again)."""
    if not socket_url:
        return False
    return socket_url.rstrip("/") != host.rstrip("/")


def detect_variant(*, two_urls: bool, health: int | None, api_health: int | None,
                   powered_by: str | None = None) -> tuple[str, str]:
    """(variant, why) from what the server shows before the test (docs/ktb-servers.md Node §7, "Telling
    Node from Java"). ``health``/``api_health``: HTTP status of ``GET /health`` and
    ``GET /api/health`` on the REST URL (None: no answer)."""
    if two_urls:
        return JAVA, "REST and Socket.IO on two URLs"
    if api_health == 200:
        return JAVA, "GET /api/health 200"
    if health == 200 and api_health == 404:
        return NODE, "one URL, GET /health 200, GET /api/health 404"
    if powered_by and "express" in powered_by.lower():
        return NODE, f"one URL, X-Powered-By: {powered_by}"
    if health == 200:
        return NODE, f"one URL, GET /health 200, GET /api/health {api_health}"
    return JAVA, f"no Node signal (GET /health {health}, GET /api/health {api_health}): assuming the Java shape"


def one_url_java_hint(variant: str, host: str, socket_url: str | None) -> str | None:
    """A warning for a Java server given one URL: the Java server serves Socket.IO on a port of its
    own (docs/ktb-servers.md Java §1: REST :5001, Socket.IO :5002), so without ``--ktb-socket-url``
    every connect goes to the REST port and fails — say so before the first failure, with the fix."""
    if variant != JAVA or separate_socket_url(host, socket_url):
        return None
    parts = urlsplit(host)
    example = (parts._replace(netloc=f"{parts.hostname}:5002").geturl().rstrip("/")
               if parts.hostname and parts.port == 5001 else "http://<host>:<Socket.IO port>")
    return (f"the KTB server is the Java variant, which serves Socket.IO on a port of its own, but no "
            f"--ktb-socket-url was given: Socket.IO is tried at {host.rstrip('/')}; if connect fails, "
            f"add --ktb-socket-url {example}")


def variant_from_session_id(session_id: Any) -> str | None:
    """64 hex chars: Node; 32: Java; anything else: unknown (None)."""
    if not isinstance(session_id, str):
        return None
    return {64: NODE, 32: JAVA}.get(len(session_id))


def auth_from_register(status: int, body: Any) -> tuple[str, str] | None:
    """(token, sessionId) when a 201 register already logged the user in (Node), else None."""
    if status != 201 or not isinstance(body, dict):
        return None
    token, sid = body.get("token"), body.get("sessionId")
    if isinstance(token, str) and token and isinstance(sid, str) and sid:
        return token, sid
    return None


# ------------------------------------------------------------------------------------ joins
FULL, SHORT, NOT_LISTED = "full", "short", "not_listed"


def participant_ids(participants: Any) -> set[str]:
    """User ids of a participants list (Java ``{id,…}``, Node ``{_id,…}``)."""
    out: set[str] = set()
    if isinstance(participants, list):
        for p in participants:
            if isinstance(p, dict):
                pid = p.get("_id", p.get("id"))
                if isinstance(pid, str):
                    out.add(pid)
    return out


def join_reply(payload: Any, user_id: str | None) -> str:
    """Classify a ``joinRoomSuccess`` for our room: ``full`` (lists us), ``short`` (``{roomId}``
    only: "already in room"), ``not_listed`` (full form without us)."""
    if not isinstance(payload, dict) or "participants" not in payload:
        return SHORT
    if user_id is None or user_id in participant_ids(payload.get("participants")):
        return FULL
    return NOT_LISTED


def join_counts(rules: VariantRules, reply: str, known_member: bool) -> bool:
    """Does this reply complete ``joinRoom``? Java: any answer for the room. Node: the full form
    listing us; a short one only when the client really was in the room (no leave pending)."""
    if rules.any_join_reply_counts or reply == FULL:
        return True
    return reply == SHORT and known_member


# ------------------------------------------------------------------------------- witnesses
def leave_notice(payload: Any) -> tuple[str, str] | None:
    """(room, name) of a system ``message`` announcing that ``name`` left (both variants send
    "<name>님이 퇴장하였습니다." to the members who stay), else None."""
    if not isinstance(payload, dict) or payload.get("type") != "system":
        return None
    content = payload.get("content")
    suffix = V.leave_text("")
    if not isinstance(content, str) or not content.endswith(suffix):
        return None
    room = payload.get("room")
    return (room if isinstance(room, str) else "", content[: -len(suffix)])


def read_receipt_key(payload: Any) -> tuple[str, tuple[str, ...]] | None:
    """(userId, messageIds) of a ``messagesRead``: the key that matches it to its emit."""
    if not isinstance(payload, dict):
        return None
    uid, ids = payload.get("userId"), payload.get("messageIds")
    if not isinstance(uid, str) or not isinstance(ids, list):
        return None
    return uid, tuple(i if isinstance(i, str) else str(i) for i in ids)


def user_listed(room_body: Any, user_id: str) -> bool | None:
    """Is ``user_id`` among the participants of a ``GET /api/rooms/:id`` answer (None: unreadable)."""
    if not isinstance(room_body, dict) or not isinstance(room_body.get("data"), dict):
        return None
    return user_id in participant_ids(room_body["data"].get("participants"))


# ---------------------------------------------------------------------------------- fetches
def fetch_wait(rules: VariantRules, now: float, last_reply_at: float | None) -> float:
    """Seconds to wait before the next ``fetchPreviousMessages`` of a room so that the server
    does not drop it (Node's throttle); 0 when it may be sent now."""
    if last_reply_at is None or rules.fetch_gap_s <= 0:
        return 0.0
    return max(0.0, last_reply_at + rules.fetch_gap_s - now)


def ignorable(event: str, payload: Any) -> bool:
    """Known crash-bug follow-ups of ktb-2nd after a *successful* operation
    (docs/ktb-servers.md Node §6.2)."""
    if event not in (V.ERROR, V.JOIN_ROOM_ERROR) or not isinstance(payload, dict):
        return False
    return payload.get("message") in V.BENIGN_ERRORS
