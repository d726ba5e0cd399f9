"""``loadkit serve ktb``: the faithful KTB Chat reference server (REST + Socket.IO).

Top level is argparse only: gevent monkey-patching and the server imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import os
import sys

from loadkit.argtypes import non_negative_float, port, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", choices=["java", "node"], default="java",
                        help="which KTB backend to reproduce: java (REST and Socket.IO on two ports, default) or "
                             "node (the Node.js backend: one port for both, no acks, ...; see docs/ktb-server.md)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=None,
                        help="Socket.IO port (default 5002; --variant node: the one port, default 5000)")
    parser.add_argument("--rest-port", type=port, default=None,
                        help="REST port (default 5001; equal to --port = one port for both, like the Node deployment)")
    parser.add_argument("--single-port", action="store_true", help="serve REST and Socket.IO on --port only")
    parser.add_argument("--db", default=":memory:", metavar="PATH",
                        help="SQLite database file; keeps users/rooms/messages across restarts (default :memory:)")
    parser.add_argument("--rate-limit", type=positive_int, default=10000, metavar="N",
                        help="chatMessage events per minute per user (default 10000)")
    parser.add_argument("--banned-words", default=None, metavar="PATH",
                        help="banned-word list, one word a line (default: a small built-in list)")
    parser.add_argument("--duplicate-login-delay", type=non_negative_float, default=10.0, metavar="SECONDS",
                        help="delay between duplicate_login and session_ended on the old socket (default 10)")
    parser.add_argument("--delay-ms", type=non_negative_float, default=0.0, metavar="N",
                        help="fixed processing delay at the start of each joinRoom, chatMessage and "
                             "markMessagesAsRead (default 0): a ground truth for latency figures")
    parser.add_argument("--auth-cost-ms", type=non_negative_float, default=0.0, metavar="N",
                        help="--variant node: time one password hash/compare takes, one at a time like bcrypt "
                             "on Node's single event loop (default 0; the real server: ~500 ms per register/login)")
    parser.add_argument("--db-latency-ms", type=non_negative_float, default=2.0, metavar="N",
                        help="--variant node: simulated MongoDB round trip between the steps of leaveRoom "
                             "(default 2), which makes a joinRoom sent right after it overtake it, as on the real server")
    parser.add_argument("--fault", default="", metavar="KIND=P,...",
                        help="inject faults, seeded, one draw per REST call, Socket.IO CONNECT and client event: "
                             "drop (close the connection), error (the server's own error answer: HTTP 500 / "
                             "joinRoomError / error / CONNECT_ERROR), stall (never answer); e.g. "
                             "drop=0.01,error=0.02,stall=0.005 (see docs/ktb-server.md#fault-injection)")
    parser.add_argument("--fault-seed", type=int, default=0, metavar="N",
                        help="seed of the fault draws: the same seed and requests give the same faults (default 0)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="server log level (default WARNING)")


def _config_error(msg: str) -> int:
    print(f"loadkit serve ktb: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if args.variant == "node":
        if args.rest_port is not None and args.port is not None and args.rest_port != args.port:
            return _config_error("--variant node serves REST and Socket.IO on one port: give --port only")
        args.port = args.port or args.rest_port or 5000
        rest_port = args.port
    else:
        args.port = args.port or 5002
        rest_port = args.rest_port if args.rest_port is not None else (args.port if args.single_port else 5001)
    if args.banned_words is not None and not os.path.isfile(args.banned_words):
        return _config_error(f"--banned-words file not found: {args.banned_words}")
    from loadkit.targets.faults import parse_faults

    from .faults import KINDS as FAULT_KINDS

    try:
        faults = parse_faults(args.fault, FAULT_KINDS)
    except ValueError as exc:
        return _config_error(str(exc))
    if args.db not in ("", ":memory:"):
        parent = os.path.dirname(os.path.abspath(args.db))
        if not os.path.isdir(parent):
            return _config_error(f"--db directory does not exist: {parent}")

    from gevent import monkey

    monkey.patch_all()

    import logging
    import resource

    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # thousands of idle sockets need file descriptors
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass

    from .server import ServerConfig, serve

    cfg = ServerConfig(host=args.host, port=args.port, rest_port=rest_port, single_port=args.single_port,
                       db=args.db, rate_limit=args.rate_limit, banned_words=args.banned_words,
                       duplicate_login_delay=args.duplicate_login_delay, delay_ms=args.delay_ms,
                       variant=args.variant, auth_cost_ms=args.auth_cost_ms, db_ms=args.db_latency_ms,
                       faults=faults, fault_seed=args.fault_seed)
    try:
        return serve(cfg)
    except (OSError, UnicodeDecodeError) as exc:
        return _config_error(str(exc))
    except Exception as exc:  # sqlite errors on a bad --db file, ...
        import sqlite3

        if isinstance(exc, sqlite3.Error):
            return _config_error(f"--db {args.db}: {exc}")
        raise
