"""The Node.js variant of the KTB reference server (``loadkit serve ktb --variant node``).

It reproduces what a *client* of the upstream Node backend (``ktb-1st``: Express + socket.io 4.8 +
mongoose + Redis, one port) can observe, fact by fact from the Node sections of
docs/ktb-servers.md (every "§" number in this package refers to them):

* REST and Socket.IO on one port; ``GET /health`` (``/api/health`` is a 404 JSON); JSON 401 bodies;
  ``x-auth-token`` + ``x-session-id`` (Bearer ignored); register logs in; 64-hex session ids (§1, §2);
* no Socket.IO acks ever (§4); ``leaveRoom`` runs concurrently with the socket's later events
  (see below);
* ``messagesRead`` to the other members only (§4.5); ``leaveRoom`` answers nothing to the leaver and
  is asynchronous: a ``joinRoom`` sent right after it overtakes it (§4.2); one room per user (§4.1);
* ISO timestamps, ``_id`` in senders and participants (§5); ``{type:"LOAD_ERROR"}`` load errors,
  ``limit`` ignored, the 300 ms fetch throttle that drops requests silently (§4.4);
* no rate limit, no banned words; chat's stale session is ``MESSAGE_ERROR`` (§4.3);
* duplicate login: the new handshake is held ``--duplicate-login-delay`` s (10), the old socket
  gets ``duplicate_login``, then ``session_ended`` and a server disconnect (§3.3); a clean client
  disconnect leaves the user a participant, any other drops it from the room (§6.1);
* Engine.IO ``pingTimeout`` 20000 and ``maxPayload`` 1000000 (§1).

Handlers of one socket run in order, except ``leaveRoom``, which awaits simulated database round
trips (``--db-latency-ms``) while the socket's next events run. The real server interleaves every
handler (echo order can differ from send order); here only the interleaving a client can trip over
(the leave/join race) is reproduced: concurrent handlers spinning out ``--delay-ms`` starve each other
by milliseconds, which would spoil that ground truth. A consequence: with ``--delay-ms``, an event
sent within the delay after a ``markMessagesAsRead`` waits for it (on the real server it would not).

Not reproduced (server-internal or crash bugs, documented in docs/ktb-server.md): Redis/Mongo,
ktb-2nd's crashes, AI features, file uploads, and the process exit on a ``null`` payload (the
event is ignored instead). Password hashing cost is optional (``--auth-cost-ms``).

The package is split by job: ``views.py`` (the JSON shapes the Node server sends), ``auth.py`` (JWT
and the one session per user), ``rest.py`` (the Express routes) and ``sockets.py`` (the socket.io
server and the ``sockets/chat.js`` handlers); ``targets/ktb/server.py`` wires them together.
"""
