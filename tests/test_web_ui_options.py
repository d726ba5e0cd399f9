"""Every loadkit scenario option is a field of Locust's web UI (secrets masked), as the docs promise.

Locust only shows options registered through its own ``parser.add_argument``; one added through an
argparse argument group works on the command line and reaches workers, yet silently never appears
in the web UI. So the expected list comes from the parser (every ``--ktb-*``/``--chldo-*`` option
loadkit registers) and is compared with what a real web UI serves.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from locust.argument_parser import get_parser

import loadkit.users.chldo  # noqa: F401 - registers the --chldo-* options
import loadkit.users.ktb  # noqa: F401 - registers the --ktb-* options
import loadkit.users.mixed  # noqa: F401 - registers the --mixed-* options
from loadkit.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"ktb_password", "chldo_api_key"}


def loadkit_options(prefix: str) -> set[str]:
    return {a.dest for a in get_parser()._actions if a.dest.startswith(prefix)}


def web_ui_options(spawn, locustfile: str) -> dict:
    port = free_port()
    host = "ws://127.0.0.1:9" if "chldo" in locustfile else "http://127.0.0.1:9"  # what each scenario's --host is
    spawn([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / locustfile), "--web-host", "127.0.0.1",
           "--web-port", str(port), "--host", host], port=port, name="webui")
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                page = r.read().decode()
            break
        except OSError:
            assert time.monotonic() < deadline, "web UI did not answer"
            time.sleep(0.3)
    start = page.index("window.templateArgs = ") + len("window.templateArgs = ")
    args, _ = json.JSONDecoder().raw_decode(page, start)
    return args["extra_options"]


def test_mixed_options_are_registered_for_the_web_ui():
    parser = get_parser()
    mixed = loadkit_options("mixed_")
    assert mixed and mixed <= set(parser.args_included_in_web_ui)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("locustfile, prefix", [("ktb_chat.py", "ktb_"), ("chldo_stream.py", "chldo_"),
                                               ("mixed.py", "mixed_")])  # its web UI starts without its URLs
def test_every_scenario_option_is_a_web_ui_field(spawn, locustfile, prefix):
    expected = loadkit_options(prefix)
    assert len(expected) >= (4 if prefix == "mixed_" else 8), expected
    shown = web_ui_options(spawn, locustfile)
    missing = expected - set(shown)
    assert not missing, f"options missing from the web UI: {sorted(missing)}"
    for name in expected:
        assert shown[name]["is_secret"] == (name in SECRETS), (name, shown[name])
