"""Bytecodes per unit of work, by function, for the benchmarks' ``--opcodes`` mode.

Why: CPU time on a shared 2-core VM varies by ±10 % from run to run; the number of bytecodes a
round trip or a frame costs does not, so a change to a hot path is compared by this count.
``sys.settrace`` with opcode events; the tracer's own code is not traced.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Callable


def opcode_tracer(counts: collections.Counter, active: Callable[[], bool] = lambda: True) -> Callable[..., Any]:
    """A ``sys.settrace`` function adding one to ``counts["file.py:function"]`` per bytecode
    executed while ``active()`` is true."""

    def tracer(frame, event, _arg):  # noqa: ANN001 - sys.settrace signature
        if event == "call":
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        elif event == "opcode" and active():
            code = frame.f_code
            counts[f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1
        return tracer

    return tracer


def print_top(counts: collections.Counter, n: int, top: int, digits: int = 2) -> None:
    """The ``top`` functions by bytecodes per unit (``n`` units)."""
    for name, k in counts.most_common(top):
        print(f"  {k / n:8.{digits}f}  {name}")
