"""``loadkit serve chldo``: the chldo sendmsg streaming reference server (argparse only at top level)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default 8765; 0 = any free port)")
    parser.add_argument("--first-token-ms", type=float, default=300.0, metavar="N",
                        help="delay from receiving sendmsg to the first token (default 300)")
    parser.add_argument("--token-ms", type=float, default=20.0, metavar="N",
                        help="delay between tokens (default 20)")
    parser.add_argument("--answer-tokens", type=int, default=40, metavar="N",
                        help="tokens (on_chat_model_stream frames) per answer (default 40)")
    parser.add_argument("--api-keys", metavar="PATH",
                        help='JSON object: api_key -> {"usable": bool, "credit": number, "return_voice": 0|1}; '
                             "without it one usable key 'demo-key' with ample credit")
    parser.add_argument("--llm-failure-rate", type=float, default=0.0, metavar="P",
                        help="fraction of turns whose (fake) LLM call fails with an in-stream error (default 0)")
    parser.add_argument("--require-msg", action="store_true",
                        help="refuse a sendmsg without msg with 'msg is required' (default: msg optional)")
    parser.add_argument("--langchain-events", action="store_true",
                        help="also emit the raw LangChain run events (on_chain_start, on_chat_model_start, "
                             "on_chain_stream, on_chain_end)")
    parser.add_argument("--no-sentence-split", action="store_true",
                        help="one sent_uid for the whole answer (the service's default without the setting)")
    parser.add_argument("--max-frame-bytes", type=int, default=65536, metavar="N",
                        help="largest accepted client frame; bigger ones close with 1009 (default 65536)")
    parser.add_argument("--max-streams-per-connection", type=int, default=4, metavar="N",
                        help="concurrent sendmsg streams allowed on one connection (default 4)")
    parser.add_argument("--max-concurrent", type=int, default=0, metavar="N",
                        help="serve at most N turns at a time (per process), queue the rest: a server of known "
                             "capacity, N / turn time turns/s (default 0 = no limit)")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="serve from N pre-forked processes sharing the port, one core each (default 1)")
    parser.add_argument("--ping-interval", type=float, default=20.0, metavar="S",
                        help="keep-alive ping interval in seconds, 0 = off (default 20)")
    parser.add_argument("--fault", default="", metavar="KIND=P,...",
                        help="inject faults per sendmsg, seeded: drop (close the connection mid-stream), error "
                             "(an error frame, then END), stall (START, then nothing), noend (the answer, no END); "
                             "e.g. drop=0.01,error=0.02,stall=0.005")
    parser.add_argument("--fault-seed", type=int, default=0, metavar="N",
                        help="seed of the fault draws: the same seed gives the same faults (default 0)")


def run(args: argparse.Namespace) -> int:
    from loadkit.targets.chldo.config import ConfigError, from_args
    from loadkit.targets.chldo.server import run_server

    try:
        cfg = from_args(args)
    except ConfigError as exc:
        print(f"loadkit serve chldo: error: {exc}", file=sys.stderr)
        return 2
    try:
        return run_server(cfg)
    except OSError as exc:
        print(f"loadkit serve chldo: error: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130
