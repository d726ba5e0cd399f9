"""What ``KtbChatUser`` does with the events the server sends without being asked
(``KtbServerEvents``): other members' messages (``delivery``), the witnesses of other users' reads
and leaves (``read_receipt``, ``leave_seen``), the signals of a lost session (``duplicate_login``,
``session_ended``, a disconnect: log in again before the next task), and events nobody claimed
(counted in ``ktb_counters``, never fatal).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from loadkit.clients.socketio import Disconnect
from loadkit.protocols import ktb, ktb_nonce
from loadkit.protocols import ktb_variants as variants
from loadkit.users import ktb_state as state
from loadkit.users.ktb_state import COUNTERS

log = logging.getLogger("loadkit.users.ktb")  # the user's logger, as before the split


class KtbServerEvents:
    """``KtbChatUser``'s handlers of server-initiated events (a mixin: ``self`` is the user, with its
    ``sio`` client, room, identity and ``need_session`` flag)."""

    def _wire_handlers(self) -> None:
        sio = self.sio
        # our own echoes are taken by chat_once's request (which remembers their ids): the
        # handler sees only the messages no request claimed, i.e. other members' (delivery)
        sio.on("message", self._on_message, claimed=False)
        sio.on("duplicate_login", lambda *a: self._session_lost("duplicate_login", a))
        sio.on("session_ended", lambda *a: self._session_lost("session_ended", a))
        # a failure event that no pending request took (it came late, after its request timed
        # out, or belongs to nothing we sent): counted, so it is visible at the end of the run
        for ev in ("error", "joinRoomError"):
            sio.on(ev, _counter(f"unclaimed_event:{ev}"), claimed=False)
        sio.on("messagesRead", self._on_read_receipt, claimed=False)
        for ev in ktb.KNOWN_SERVER_EVENTS - {"message", "duplicate_login", "session_ended", "error", "joinRoomError",
                                             "messagesRead"}:
            sio.on(ev, _noop, claimed=False)  # known, needs no reaction: not "unknown"
        sio.raw.on_unhandled = self._on_unknown
        sio.raw.on_disconnect = self._on_disconnect

    def _remember(self, msg: dict) -> None:
        """Keep the ids of recent messages in our room (markMessagesAsRead and messageReaction
        act on them)."""
        mid = msg.get("_id")
        if isinstance(mid, str) and mid and msg.get("room") in (None, self.room_id):
            self.recent_ids.append(mid)

    def _on_message(self, msg: Any = None, *_: Any) -> None:
        if not isinstance(msg, dict):
            return
        self._remember(msg)
        if state.PENDING_LEAVES and msg.get("type") == "system":
            self._on_leave_notice(msg)
            return
        if self.delivery:
            content = msg.get("content")
            if not isinstance(content, str) or content.startswith(self.content_prefix):
                return  # our own echo (timed by chatMessage) or not a loadkit message
            n = ktb_nonce.parse_content(content)
            if n is not None and n.sender != self.me:
                if n.host != state.HOST:
                    COUNTERS.bump("delivery_other_host")
                    return
                rt = time.time() * 1000.0 - n.sent_us / 1000.0
                self._receive_metric("delivery", max(0.0, rt), len(msg.get("content", "")))

    def _on_leave_notice(self, msg: dict) -> None:
        """Witness of a leave: a member who stays sees "<name>님이 퇴장하였습니다." (``leave_seen``)."""
        notice = variants.leave_notice(msg)
        pending = state.PENDING_LEAVES.pop(notice, None) if notice else None
        if pending is not None:
            t0, done = pending
            self._receive_metric("leave_seen", (time.perf_counter() - t0) * 1000.0, 0)
            done.set()

    def _on_read_receipt(self, payload: Any = None, *_: Any) -> None:
        """Witness of a read receipt: another member's ``messagesRead`` (``read_receipt``, time from
        the reader's emit to its first witness in this process)."""
        if not state.PENDING_READS:
            return
        key = variants.read_receipt_key(payload)
        t0 = state.PENDING_READS.pop(key, None) if key else None
        if t0 is not None:
            self._receive_metric("read_receipt", (time.perf_counter() - t0) * 1000.0, len(key[1]))

    def _session_lost(self, event: str, args: tuple) -> None:
        COUNTERS.bump(event)
        self._lose_session(ktb.classify(event, args[0] if args else None))

    def _on_disconnect(self, reason: str) -> None:
        COUNTERS.bump("disconnects")
        self._lose_session(Disconnect(reason))

    def _lose_session(self, exc: Exception) -> None:
        """One ``session_lost:<class>`` count per lost session: the server's duplicate_login, the
        session_ended 10 s later and the disconnect after it are one loss, counted by the first
        (the counters still count each signal). Not a request event: no request of ours failed."""
        already = self.need_session
        self.need_session = True
        if not already:
            COUNTERS.bump(f"session_lost:{type(exc).__name__}")
            log.info("user %s: session lost (%s); logging in again", self.user_no, exc)

    def _on_unknown(self, ev: Any) -> None:
        COUNTERS.bump(f"unknown_event:{ev.name}")

def _noop(*_: Any) -> None:
    return None


def _counter(key: str) -> Any:
    def bump(*_: Any) -> None:
        COUNTERS.bump(key)

    return bump
