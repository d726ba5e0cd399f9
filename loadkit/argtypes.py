"""argparse value types shared by the ``loadkit`` subcommands.

Why: a bad number on the command line must end in one argparse line naming the option, not a
traceback deep inside a server, and every subcommand should word it the same way.
"""

from __future__ import annotations

import argparse
from typing import Callable


def at_least(kind: type, minimum: float) -> Callable[[str], object]:
    """A type converting with ``kind`` (int or float) that refuses values below ``minimum``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}") from None
        if value != value or value < minimum:  # NaN compares false
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum:g}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse's "invalid int value" wording for other errors
    return parse


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    value = at_least(int, 1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: must be 1..65535")
    return value


non_negative_int = at_least(int, 0)
positive_int = at_least(int, 1)
non_negative_float = at_least(float, 0)
