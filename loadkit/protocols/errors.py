"""The one error tree of loadkit's clients: the kinds of failure both protocols share.

Why one tree: a load test asks the same questions of every protocol — did it time out, was the
connection lost, could it not connect, who broke the protocol, did the server say no — and a
user, a report or a dashboard should be able to ask them without knowing which protocol failed.
So every failure a client reports is a :class:`LoadkitError` and, below it, one (or, where a
failure is two things at once, more) of the shared kinds; the protocol-specific classes (their
names are what ``<prefix>_failures.csv``, the web UI and the Prometheus ``exception`` label show,
so they never change) sit below those kinds::

    LoadkitError
    ├── Timeout            AnswerTimeout, ChldoTimeout
    ├── ConnectionLost     Disconnect, ChldoConnectionLost, SendFailed
    ├── ConnectFailed      ConnectionFailed, ConnectRefused, ChldoConnectError, UpgradeFailed
    ├── ProtocolViolation
    │   ├── RemoteProtocolError   (the server broke it) WireError, ProtocolError, BadAnswer,
    │   │                         ChldoProtocolError
    │   └── LocalProtocolError    (we would break it) raised before anything is sent
    └── Rejected           (the server said no, with a code and a message) ErrorAnswer,
                           ConnectRefused, KtbError and its kinds, ChldoValidationError,
                           ChldoStreamError

The per-protocol roots (``SocketIOError``, ``KtbError``, ``ChldoError``) stay as well, so code
that catches "any Socket.IO failure" keeps working.

Modelled on h11 (``LocalProtocolError`` vs ``RemoteProtocolError`` says who broke the protocol)
and websockets (one tree, sans-I/O errors marked). Timings are no part of an exception: a
request's result object carries them (``loadkit.protocols.correlation.Pending``, the chldo
``Turn``). Pure: importable from every layer.
"""

from __future__ import annotations

__all__ = [
    "ConnectFailed", "ConnectionLost", "LoadkitError", "LocalProtocolError", "ProtocolViolation",
    "Rejected", "RemoteProtocolError", "Timeout",
]


class LoadkitError(Exception):
    """Root of every failure a loadkit client reports; ``str(exc)`` is what Locust groups failures
    by, ``type(exc).__name__`` what the failure tables and the Prometheus label show."""


class Timeout(LoadkitError):
    """No answer (or no end of a stream) within the request's time limit."""


class ConnectionLost(LoadkitError):
    """An established connection closed or failed while something was pending (or was used
    after it had)."""


class ConnectFailed(LoadkitError):
    """The connection could not be established (TCP, TLS, the websocket upgrade, the protocol's
    own opening handshake)."""


class ProtocolViolation(LoadkitError):
    """Someone broke the wire protocol; the subclass says who."""


class RemoteProtocolError(ProtocolViolation):
    """The server sent something the protocol does not allow (bad framing, an undecodable packet,
    an answer whose payload cannot be read, a frame out of sequence)."""


class LocalProtocolError(ProtocolViolation):
    """The client was about to send something the protocol does not allow; raised before
    sending, so the connection is still intact."""


class Rejected(LoadkitError):
    """The server understood the request and refused it (or failed it) with its own code and
    message. ``code`` is ``None`` when the server sent none."""

    code: str | None = None
    server_message: str = ""
