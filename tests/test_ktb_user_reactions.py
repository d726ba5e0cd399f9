"""KtbChatUser reacts to server-side state changes like a real client (in-process, real server)."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import pytest  # noqa: E402
from locust import events  # noqa: E402
from locust.argument_parser import parse_options  # noqa: E402
from locust.env import Environment  # noqa: E402

from loadkit.procs import free_port, loadkit_argv  # noqa: E402
from loadkit.protocols import ktb  # noqa: E402
from loadkit.users.ktb import KtbChatUser  # noqa: E402


class ReactingUser(KtbChatUser):
    pass


@pytest.mark.timeout(60)
def test_user_joins_the_room_again_after_the_server_dropped_it(spawn):
    port = free_port()
    spawn(loadkit_argv("serve", "ktb", "--host", "127.0.0.1", "--port", str(port), "--rest-port", str(port)),
          port=port, name="ktb")
    url = f"http://127.0.0.1:{port}"
    opts = parse_options(["--host", url, "--ktb-room-size", "1", "--ktb-wait-min", "0", "--ktb-wait-max", "0",
                          "--ktb-delivery", "off"])
    ReactingUser.host = url  # what Locust does for --host when it starts users
    env = Environment(user_classes=[ReactingUser], events=events, host=url, parsed_options=opts)
    seen: list[tuple[str, object]] = []

    def record(request_type, name, exception=None, **_kw):
        if request_type == "ktb":
            seen.append((name, exception))

    events.request.add_listener(record)
    user = ReactingUser(env)
    try:
        user.on_start()
        user.send_chat()
        # the server drops this user from the room behind the user's back (what the late
        # disconnect of an older socket of the same account does, facts §4.5)
        user.sio.raw.call("leaveRoom", user.room_id, timeout=5)
        user.send_chat()  # refused: no access to the room
        assert user.need_join and not user.need_session
        user.send_chat()  # joins again first, then the message goes through
        user.send_chat()
    finally:
        user.on_stop()
        events.request.remove_listener(record)
    names = [n for n, _ in seen]
    assert names == ["connect", "joinRoom", "chatMessage", "chatMessage", "joinRoom", "chatMessage", "chatMessage"], seen
    refused = seen[3][1]
    assert isinstance(refused, ktb.MessageError) and ktb.lost_room_access(refused), refused
    assert all(exc is None for i, (_, exc) in enumerate(seen) if i != 3), seen
    assert not user.need_join


@pytest.mark.timeout(60)
def test_a_user_alone_in_its_room_marks_and_reacts_to_its_own_messages(spawn):
    """In rooms of 1 the only messages are the user's own echoes, taken by its chatMessage
    requests (the ``message`` handler never sees them): their ids must still feed
    markMessagesAsRead and messageReaction."""
    port = free_port()
    spawn(loadkit_argv("serve", "ktb", "--host", "127.0.0.1", "--port", str(port), "--rest-port", str(port)),
          port=port, name="ktb")
    url = f"http://127.0.0.1:{port}"
    opts = parse_options(["--host", url, "--ktb-room-size", "1", "--ktb-wait-min", "0", "--ktb-wait-max", "0"])
    ReactingUser.host = url
    env = Environment(user_classes=[ReactingUser], events=events, host=url, parsed_options=opts)
    seen: list[tuple[str, object]] = []

    def record(request_type, name, exception=None, **_kw):
        if request_type == "ktb":
            seen.append((name, exception))

    events.request.add_listener(record)
    user = ReactingUser(env)
    try:
        user.on_start()
        own = [user.chat_once().data["_id"] for _ in range(2)]
        assert list(user.recent_ids)[-2:] == own
        user.mark_read()
        user.react()
    finally:
        user.on_stop()
        events.request.remove_listener(record)
    assert [n for n, _ in seen] == ["connect", "joinRoom", "chatMessage", "chatMessage", "markMessagesAsRead",
                                    "messageReaction", "messageReaction"], seen
    assert all(exc is None for _, exc in seen), seen
