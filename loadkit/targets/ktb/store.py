"""SQLite persistence plus the in-memory indexes the hot path reads.

Users, rooms (with their participant lists) and sessions are small and read on every event, so they
live in dicts and are written through to SQLite. Messages and read receipts live only in SQLite,
indexed on (room, timestamp) for the history queries. Writes are committed in batches by
``flush()`` (the server calls it a few times a second and at shutdown), so a chatMessage costs one
INSERT, not one fsync; with ``--db PATH`` everything committed survives a restart.

Timestamps are epoch milliseconds. Within a room they are made strictly increasing (a message in the
same millisecond as the previous one gets +1 ms) so that ``before``-paging, which is strict like
Java's ``timestamp < before``, never skips a message.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import jsonfast

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE,
    salt TEXT NOT NULL, pwhash TEXT NOT NULL, profile_image TEXT, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    user_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    last_activity INTEGER NOT NULL, user_agent TEXT, ip TEXT);
CREATE TABLE IF NOT EXISTS rooms (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, creator TEXT NOT NULL, salt TEXT, pwhash TEXT,
    created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS room_participants (
    room_id TEXT NOT NULL, user_id TEXT NOT NULL, pos INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, room TEXT NOT NULL, content TEXT NOT NULL, sender TEXT, type TEXT NOT NULL,
    file_id TEXT, ts INTEGER NOT NULL, reactions TEXT, metadata TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_room_ts ON messages (room, ts);
CREATE TABLE IF NOT EXISTS readers (
    message_id TEXT NOT NULL, user_id TEXT NOT NULL, read_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, filename TEXT NOT NULL, originalname TEXT NOT NULL, mimetype TEXT NOT NULL,
    size INTEGER NOT NULL, user_id TEXT NOT NULL, upload_date INTEGER NOT NULL);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


class ObjectIds:
    """24-hex ids shaped like MongoDB ObjectIds: 4-byte seconds, 5 random bytes, 3-byte counter."""

    def __init__(self) -> None:
        self._rand = "%010x" % int.from_bytes(os.urandom(5), "big")
        self._counter = int.from_bytes(os.urandom(3), "big")

    def new(self) -> str:
        self._counter = (self._counter + 1) & 0xFFFFFF
        return "%08x%s%06x" % (int(time.time()) & 0xFFFFFFFF, self._rand, self._counter)


@dataclass(slots=True)
class User:
    id: str
    name: str
    email: str
    salt: str
    pwhash: str
    profile_image: str | None
    created_at: int


@dataclass(slots=True)
class Session:
    user_id: str
    session_id: str
    created_at: int
    last_activity: int
    user_agent: str | None = None
    ip: str | None = None


@dataclass(slots=True)
class Room:
    id: str
    name: str
    creator: str
    salt: str | None
    pwhash: str | None
    created_at: int
    participants: dict[str, None] = field(default_factory=dict)  # ordered set of user ids
    last_ts: int = 0  # newest message timestamp, for strictly increasing per-room timestamps
    seq: int = 0  # creation order, a stable tie-breaker for sorting

    @property
    def has_password(self) -> bool:
        return bool(self.pwhash)


@dataclass(slots=True)
class Message:
    id: str
    room: str
    content: str
    sender: str | None
    type: str
    file_id: str | None
    ts: int
    reactions: dict[str, list[str]] | None
    metadata: dict[str, Any] | None


class Store:
    """All state of one server; every method is called from the server's single OS thread."""

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self.persistent = path not in ("", ":memory:")
        self.db = sqlite3.connect(path, check_same_thread=False)
        if self.persistent:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.commit()
        self._dirty = False
        self.ids = ObjectIds()
        self.users: dict[str, User] = {}
        self.users_by_email: dict[str, User] = {}
        self.sessions: dict[str, Session] = {}
        self.rooms: dict[str, Room] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self._room_seq = 0
        self._load()
        self.jwt_secret = self._meta_secret()

    # ------------------------------------------------------------------ loading / flushing
    def _load(self) -> None:
        for row in self.db.execute("SELECT id, name, email, salt, pwhash, profile_image, created_at FROM users"):
            u = User(*row)
            self.users[u.id] = u
            self.users_by_email[u.email] = u
        for row in self.db.execute(
            "SELECT user_id, session_id, created_at, last_activity, user_agent, ip FROM sessions"
        ):
            s = Session(*row)
            self.sessions[s.user_id] = s
        for row in self.db.execute("SELECT id, name, creator, salt, pwhash, created_at FROM rooms ORDER BY rowid"):
            self._room_seq += 1
            r = Room(*row, seq=self._room_seq)
            self.rooms[r.id] = r
        for room_id, user_id in self.db.execute("SELECT room_id, user_id FROM room_participants ORDER BY room_id, pos"):
            room = self.rooms.get(room_id)
            if room is not None:
                room.participants[user_id] = None
        for room_id, ts in self.db.execute("SELECT room, MAX(ts) FROM messages GROUP BY room"):
            room = self.rooms.get(room_id)
            if room is not None:
                room.last_ts = ts or 0
        for row in self.db.execute("SELECT id, filename, originalname, mimetype, size, user_id, upload_date FROM files"):
            self.files[row[0]] = dict(zip(("_id", "filename", "originalname", "mimetype", "size", "user", "uploadDate"), row))

    def _meta_secret(self) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key='jwt_secret'").fetchone()
        if row:
            return row[0]
        secret = secrets.token_hex(32)
        self.db.execute("INSERT INTO meta (key, value) VALUES ('jwt_secret', ?)", (secret,))
        self.db.commit()
        return secret

    def flush(self) -> None:
        """Commit what was written since the last flush (cheap when nothing was)."""
        if self._dirty:
            self._dirty = False
            self.db.commit()

    def close(self) -> None:
        if self.persistent:
            self.db.executemany(
                "UPDATE sessions SET last_activity=? WHERE user_id=?",
                [(s.last_activity, s.user_id) for s in self.sessions.values()],
            )
        self._dirty = True
        self.flush()
        self.db.close()

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, email: str, salt: str, pwhash: str) -> User:
        u = User(self.ids.new(), name, email, salt, pwhash, None, now_ms())
        self.db.execute(
            "INSERT INTO users (id, name, email, salt, pwhash, profile_image, created_at) VALUES (?,?,?,?,?,?,?)",
            (u.id, u.name, u.email, u.salt, u.pwhash, u.profile_image, u.created_at),
        )
        self._dirty = True
        self.users[u.id] = u
        self.users_by_email[u.email] = u
        return u

    # ------------------------------------------------------------------ sessions
    def put_session(self, s: Session) -> None:
        self.sessions[s.user_id] = s
        self.db.execute(
            "INSERT OR REPLACE INTO sessions (user_id, session_id, created_at, last_activity, user_agent, ip)"
            " VALUES (?,?,?,?,?,?)",
            (s.user_id, s.session_id, s.created_at, s.last_activity, s.user_agent, s.ip),
        )
        self._dirty = True

    def delete_session(self, user_id: str) -> None:
        if self.sessions.pop(user_id, None) is not None:
            self.db.execute("DELETE FROM sessions WHERE user_id=?", (user_id,))
            self._dirty = True

    # ------------------------------------------------------------------ rooms
    def add_room(self, name: str, creator: str, salt: str | None, pwhash: str | None) -> Room:
        self._room_seq += 1
        r = Room(self.ids.new(), name, creator, salt, pwhash, now_ms(), {creator: None}, 0, self._room_seq)
        self.db.execute(
            "INSERT INTO rooms (id, name, creator, salt, pwhash, created_at) VALUES (?,?,?,?,?,?)",
            (r.id, r.name, r.creator, r.salt, r.pwhash, r.created_at),
        )
        self.db.execute("INSERT INTO room_participants (room_id, user_id, pos) VALUES (?,?,0)", (r.id, creator))
        self._dirty = True
        self.rooms[r.id] = r
        return r

    def add_participant(self, room: Room, user_id: str) -> bool:
        if user_id in room.participants:
            return False
        room.participants[user_id] = None
        self.db.execute(
            "INSERT OR IGNORE INTO room_participants (room_id, user_id, pos) VALUES (?,?,?)",
            (room.id, user_id, now_ms()),
        )
        self._dirty = True
        return True

    def remove_participant(self, room: Room, user_id: str) -> None:
        if room.participants.pop(user_id, 0) is None:
            self.db.execute("DELETE FROM room_participants WHERE room_id=? AND user_id=?", (room.id, user_id))
            self._dirty = True

    # ------------------------------------------------------------------ files
    def add_file(self, filename: str, originalname: str, mimetype: str, size: int, user_id: str) -> dict[str, Any]:
        f = {"_id": self.ids.new(), "filename": filename, "originalname": originalname, "mimetype": mimetype,
             "size": size, "user": user_id, "uploadDate": now_ms()}
        self.db.execute(
            "INSERT INTO files (id, filename, originalname, mimetype, size, user_id, upload_date) VALUES (?,?,?,?,?,?,?)",
            (f["_id"], filename, originalname, mimetype, size, user_id, f["uploadDate"]),
        )
        self._dirty = True
        self.files[f["_id"]] = f
        return f

    # ------------------------------------------------------------------ messages
    def add_message(
        self, room: Room, content: str, sender: str | None, mtype: str, file_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Message:
        ts = int(time.time() * 1000)
        if ts <= room.last_ts:
            ts = room.last_ts + 1
        room.last_ts = ts
        m = Message(self.ids.new(), room.id, content, sender, mtype, file_id, ts, None, metadata)
        self.db.execute(
            "INSERT INTO messages (id, room, content, sender, type, file_id, ts, reactions, metadata)"
            " VALUES (?,?,?,?,?,?,?,NULL,?)",
            (m.id, m.room, content, sender, mtype, file_id, ts, jsonfast.dumps(metadata) if metadata else None),
        )
        self._dirty = True
        return m

    _MSG_COLS = "id, room, content, sender, type, file_id, ts, reactions, metadata"

    @staticmethod
    def _row_to_message(row: tuple) -> Message:
        mid, room, content, sender, mtype, file_id, ts, reactions, metadata = row
        return Message(
            mid, room, content, sender, mtype, file_id, ts,
            jsonfast.loads(reactions) if reactions else None,
            jsonfast.loads(metadata) if metadata else None,
        )

    def get_message(self, message_id: str) -> Message | None:
        row = self.db.execute(f"SELECT {self._MSG_COLS} FROM messages WHERE id=?", (message_id,)).fetchone()
        return self._row_to_message(row) if row else None

    def messages_before(self, room_id: str, before: int | None, limit: int) -> tuple[list[Message], bool]:
        """Up to ``limit`` messages with ``ts < before`` (all if ``before`` is None), ascending, and hasMore."""
        if before is None:
            rows = self.db.execute(
                f"SELECT {self._MSG_COLS} FROM messages WHERE room=? ORDER BY ts DESC LIMIT ?", (room_id, limit + 1)
            ).fetchall()
        else:
            rows = self.db.execute(
                f"SELECT {self._MSG_COLS} FROM messages WHERE room=? AND ts<? ORDER BY ts DESC LIMIT ?",
                (room_id, before, limit + 1),
            ).fetchall()
        has_more = len(rows) > limit
        rows = rows[:limit]
        rows.reverse()
        return [self._row_to_message(r) for r in rows], has_more

    def count_recent(self, room_id: str, since_ms: int) -> int:
        return self.db.execute("SELECT COUNT(*) FROM messages WHERE room=? AND ts>=?", (room_id, since_ms)).fetchone()[0]

    def newest_message_ts(self) -> int | None:
        return self.db.execute("SELECT MAX(ts) FROM messages").fetchone()[0]

    def set_reactions(self, m: Message) -> None:
        self.db.execute(
            "UPDATE messages SET reactions=? WHERE id=?",
            (jsonfast.dumps(m.reactions) if m.reactions else None, m.id),
        )
        self._dirty = True

    def readers_of(self, message_ids: Iterable[str]) -> dict[str, list[tuple[str, int]]]:
        ids = list(message_ids)
        out: dict[str, list[tuple[str, int]]] = {}
        if not ids:
            return out
        marks = ",".join("?" * len(ids))
        for mid, uid, at in self.db.execute(
            f"SELECT message_id, user_id, read_at FROM readers WHERE message_id IN ({marks}) ORDER BY read_at", ids
        ):
            out.setdefault(mid, []).append((uid, at))
        return out

    def mark_read(self, message_ids: Iterable[str], user_id: str) -> None:
        at = now_ms()
        self.db.executemany(
            "INSERT OR IGNORE INTO readers (message_id, user_id, read_at) VALUES (?,?,?)",
            [(mid, user_id, at) for mid in message_ids],
        )
        self._dirty = True

    def existing_message_ids(self, message_ids: list[str]) -> list[str]:
        if not message_ids:
            return []
        marks = ",".join("?" * len(message_ids))
        return [r[0] for r in self.db.execute(f"SELECT id FROM messages WHERE id IN ({marks})", message_ids)]
