"""Mixed scenario of `loadkit demo` and docker-compose: KTB chat users and chldo streaming users.

Leave Locust's ``--host`` empty; the two targets are options (see loadkit/users/mixed.py):

    locust -f locustfiles/mixed.py --headless -u 20 -r 10 -t 60s \
        --mixed-ktb-url http://127.0.0.1:5001 --ktb-socket-url http://127.0.0.1:5002 \
        --mixed-chldo-url ws://127.0.0.1:8765
"""

from loadkit.users.mixed import ChldoStream, KtbChat  # noqa: F401 - the two user kinds, weighted by options
