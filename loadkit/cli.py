"""loadkit: honest load tests for Socket.IO chat and streaming WebSocket LLM APIs, on Locust.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules keep their top level light (argparse only) and import heavy machinery inside ``run``,
so that ``loadkit --help`` is instant and each server can monkey-patch gevent before its imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command path, module, help)
_COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("serve", "ktb"), "loadkit.targets.ktb.cli", "run the KTB Chat reference server (REST + Socket.IO)"),
    (("serve", "chldo"), "loadkit.targets.chldo.cli", "run the chldo sendmsg streaming reference server"),
    (("report",), "loadkit.reports.cli", "build one HTML report from Locust and k6 runs"),
    (("demo",), "loadkit.demo", "start both targets and run a distributed Locust demo against them"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadkit", description=__doc__.splitlines()[0])
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module_name, help_text in _COMMANDS:
        if len(path) == 1:
            sub = top.add_parser(path[0], help=help_text, description=help_text)
        else:
            if path[0] not in groups:
                grp = top.add_parser(path[0], help=f"{path[0]} a reference target")
                groups[path[0]] = grp.add_subparsers(dest="target", metavar="TARGET", required=True)
            sub = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a subcommand not built yet must not break the others
            if exc.name != module_name:
                raise
            sub.set_defaults(_module=None, _missing=module_name)
            continue
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args._module is None:
        print(f"loadkit: {args._missing} is not available in this build", file=sys.stderr)
        return 2
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
