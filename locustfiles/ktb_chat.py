"""KTB Chat load test: register/login, rooms of --ktb-room-size, connect, join, then all six events.

    locust -f locustfiles/ktb_chat.py --host http://127.0.0.1:5001 --ktb-socket-url http://127.0.0.1:5002   # Java
    locust -f locustfiles/ktb_chat.py --host http://127.0.0.1:5000                                          # Node

The server variant is recognised before the first task (``--ktb-server auto``, logged in one line).

Options: see ``locust -f locustfiles/ktb_chat.py --help`` (group "KTB chat") and docs/ktb-users.md.
"""

from loadkit.users.ktb import KtbChatUser


class KtbChat(KtbChatUser):
    pass
