"""Frames per second through the chldo sans-I/O core alone (no sockets): WebSocket decoding,
json.loads and the turn state machine, on one core. An upper bound for bench_chldo_client.py.

    python bench/bench_chldo_core.py [--seconds 3]
"""

import argparse
import json
import sys
import time
from pathlib import Path

from loadkit.protocols.chldo_turn import ChldoSession, _loads
from loadkit.protocols.wsframe import OP_TEXT, FrameDecoder, encode_frame

SEED = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "chldo" / "seed_success_voice.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--read-size", type=int, default=65536, help="bytes per simulated recv")
    args = ap.parse_args()
    frames = [json.dumps(json.loads(line), ensure_ascii=False).encode() for line in SEED.read_text("utf-8").splitlines()]
    uid = b"BfS806fFPYoi00yn9cJx04X0b"
    wire = b"".join(  # 50 turns back to back, each with its own stream_uid
        encode_frame(OP_TEXT, f.replace(uid, b"T%024d" % t)) for t in range(50) for f in frames)
    reads = [wire[i:i + args.read_size] for i in range(0, len(wire), args.read_size)]
    n_frames = 0
    turns = 0
    t0 = time.perf_counter()
    stop = t0 + args.seconds
    while time.perf_counter() < stop:
        dec = FrameDecoder()
        session = ChldoSession()
        session.begin(0.0)
        for data in reads:
            now = time.perf_counter()
            for op, payload in dec.feed(data):
                n_frames += 1
                if session.on_text(payload, now) is not None:
                    turns += 1
                    session.begin(now)
    dt = time.perf_counter() - t0
    print(f"json: {_loads.__module__}; frames of the vendor's example turn ({len(frames)} frames, avg "
          f"{sum(map(len, frames)) / len(frames):.0f} bytes), {args.read_size}-byte reads")
    assert not session.stray and turns * len(frames) == n_frames - (n_frames % len(frames)), session.stray[:1]
    print(f"{n_frames} frames, {turns} turns in {dt:.2f} s -> {n_frames / dt:,.0f} frames/s on one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
