"""One validation of every option, command line and web UI (issue #15 item 1)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from loadkit.options import number, url
from loadkit.procs import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_checks_say_what_is_wrong():
    with pytest.raises(ValueError, match="finite"):
        number(0)("nan")
    with pytest.raises(ValueError, match="finite"):
        number(0)("inf")
    with pytest.raises(ValueError, match=">= 0"):
        number(0, integer=True)("-1")
    with pytest.raises(ValueError, match="> 0"):
        number(0, above=True)("0")
    assert number(0, integer=True)("3") == 3
    with pytest.raises(ValueError, match="http:// or https://.*e.g. http://h:1"):
        url("http", "https", example="http://h:1")("127.0.0.1:5001")
    with pytest.raises(ValueError, match="not a URL"):
        url("http", example="http://h:1")("http://h:99999")
    assert url("ws", example="ws://h", empty_ok=True)("") == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("locustfile, args, line", [
    ("chldo_stream.py", ["--host", "127.0.0.1:8765"], "--host needs a URL starting with ws:// or wss://"),
    ("chldo_stream.py", [], "--host is required by ChldoStreamUser, e.g. --host ws://127.0.0.1:8765"),
    ("ktb_chat.py", ["--host", "127.0.0.1:5001"], "--host needs a URL starting with http:// or https://"),
    ("ktb_chat.py", [], "--host is required by KtbChat, e.g. --host http://127.0.0.1:5001"),
    ("chldo_stream.py", ["--host", "ws://127.0.0.1:9", "--chldo-turns-per-connection", "-1"],
     "--chldo-turns-per-connection: must be >= 0, got -1"),
    ("chldo_stream.py", ["--host", "ws://127.0.0.1:9", "--chldo-detail-metrics", "5"],
     "--chldo-detail-metrics: expected one of 0, 1, got '5'"),
    ("chldo_stream.py", ["--host", "ws://127.0.0.1:9", "--chldo-prompts", "/nonexistent/p.txt"],
     "--chldo-prompts: no such file: '/nonexistent/p.txt'"),
    ("chldo_stream.py", ["--host", "ws://127.0.0.1:9", "--chldo-turn-timeout", "nan"],
     "--chldo-turn-timeout: expected a finite number, got 'nan'"),
    ("chldo_stream.py", ["--host", "ws://127.0.0.1:9", "--chldo-max-message-size", "0"],
     "--chldo-max-message-size: must be from 1 to 1073741824 bytes (1 GiB), got 0"),
    ("mixed.py", ["--mixed-ktb-url", "banana", "--mixed-chldo-url", "ws://127.0.0.1:9"],
     "--mixed-ktb-url: needs a URL starting with http:// or https://"),
    ("mixed.py", ["--mixed-chldo-url", "ws://127.0.0.1:9"],
     "the mixed scenario needs --mixed-ktb-url (the servers of the two user kinds)"),
    ("mixed.py", ["--mixed-ktb-url", "http://127.0.0.1:9", "--mixed-chldo-url", "ws://127.0.0.1:9",
                  "--mixed-ktb-weight", "0", "--mixed-chldo-weight", "0"],
     "--mixed-ktb-weight + --mixed-chldo-weight must be > 0"),
])
def test_bad_command_line_values_are_one_line_and_exit_2(locustfile, args, line, tmp_path):
    r = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / locustfile), "--headless",
                        "-u", "1", "-t", "3s", *args], capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert f"loadkit: error: {line}" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def _page_options(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        page = r.read().decode()
    start = page.index("window.templateArgs = ") + len("window.templateArgs = ")
    return json.JSONDecoder().raw_decode(page, start)[0]["extra_options"]


def _swarm(port: int, **form) -> tuple[int, dict]:
    data = urllib.parse.urlencode({"user_count": "1", "spawn_rate": "1", **form}).encode()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/swarm", data=data, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _web_ui(spawn, locustfile: str, host: str) -> int:
    """A Locust web UI of ``locustfile`` (no run started); returns its port once it serves."""
    port = free_port()
    spawn([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / locustfile), "--web-host", "127.0.0.1",
           "--web-port", str(port), "--host", host], port=port, name="webui")
    deadline = time.monotonic() + 20
    while True:
        try:
            _page_options(port)
            return port
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.3)


@pytest.mark.timeout(60)
def test_the_web_ui_refuses_bad_values_before_locust_keeps_them(spawn):
    port = _web_ui(spawn, "chldo_stream.py", "ws://127.0.0.1:9")
    status, body = _swarm(port, host="ws://127.0.0.1:9", chldo_turns_per_connection="abc")
    assert status == 400 and body["success"] is False
    assert "--chldo-turns-per-connection: expected a whole number, got 'abc'" in body["message"]
    status, body = _swarm(port, host="notaurl")
    assert status == 400 and "--host needs a URL starting with ws:// or wss://" in body["message"]
    # nothing stuck: the page still offers the command line's value
    assert _page_options(port)["chldo_turns_per_connection"]["default_value"] == 0
    status, body = _swarm(port, host="ws://127.0.0.1:9", chldo_turns_per_connection="2")
    assert status == 200 and body["success"] is True, body
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/stop", method="POST"), timeout=10).read()


@pytest.mark.timeout(60)
def test_the_mixed_web_ui_starts_without_its_urls_and_the_form_must_give_them(spawn):
    """The web UI asks for the mixed scenario's two servers the way it asks for --host: the page
    comes up without them, and a swarm without them is refused with the same line as on the
    command line."""
    port = _web_ui(spawn, "mixed.py", "http://127.0.0.1:9")
    status, body = _swarm(port, mixed_chldo_url="ws://127.0.0.1:9")
    assert status == 400 and body["success"] is False, body
    assert "the mixed scenario needs --mixed-ktb-url (the servers of the two user kinds)" in body["message"]
    status, body = _swarm(port, mixed_ktb_url="http://127.0.0.1:9", mixed_chldo_url="ws://127.0.0.1:9")
    assert status == 200 and body["success"] is True, body
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/stop", method="POST"), timeout=10).read()


@pytest.mark.timeout(60)
def test_the_web_ui_refuses_bad_ktb_values(spawn):
    port = _web_ui(spawn, "ktb_chat.py", "http://127.0.0.1:9")
    for value, says in (("0", "--ktb-room-size: must be >= 1"), ("abc", "--ktb-room-size: expected a whole number")):
        status, body = _swarm(port, host="http://127.0.0.1:9", ktb_room_size=value)
        assert status == 400 and body["success"] is False and says in body["message"], body
    assert _page_options(port)["ktb_room_size"]["default_value"] == 10  # nothing stuck


def test_an_option_is_declared_once_and_a_user_reads_its_declared_default():
    """Library mode (no parsed options): every --ktb-*/--chldo-* value a user reads is the default
    of the option's one add_argument, not a second copy in the user's code."""
    import ast
    from types import SimpleNamespace

    import loadkit.users.chldo
    import loadkit.users.ktb
    from loadkit import options

    assert options.default("ktb_timeout") == 10.0
    parser = options._PARSER[0]
    dests = [a.dest for a in parser._actions if a.dest.startswith(("ktb_", "chldo_"))]
    assert len(dests) > 20
    library = SimpleNamespace(parsed_options=None)
    for dest in dests:
        assert options.value(library, dest) == parser.get_default(dest), dest
    run = SimpleNamespace(parsed_options=SimpleNamespace(ktb_timeout=3.5, chldo_turn_timeout=None))
    assert options.value(run, "ktb_timeout") == 3.5
    assert options.value(run, "chldo_turn_timeout") == parser.get_default("chldo_turn_timeout")
    # and the user modules read them with the name only (no default repeated next to the read)
    for module in (loadkit.users.ktb, loadkit.users.chldo):
        tree = ast.parse(Path(module.__file__).read_text())
        reads = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id in ("_opt", "get", "option_value")
                 and any(isinstance(a, ast.Constant) and str(a.value).startswith(("ktb_", "chldo_")) for a in n.args)]
        assert reads, module.__name__
        repeated = [ast.unparse(n) for n in reads if n.keywords or not (
            isinstance(n.args[-1], ast.Constant) and str(n.args[-1].value).startswith(("ktb_", "chldo_")))]
        assert not repeated, f"{module.__name__} repeats a default: {repeated}"


def test_no_module_repeats_a_loadkit_option_default_in_a_getattr():
    """``getattr(options, "sweep_rates", "6")`` was a second copy of ``--sweep-rates``' default in the
    code that reads it; every loadkit option is read with :func:`loadkit.options.of`/``value``, which
    fall back to the one ``add_argument``. (The reference servers have their own parsers.)"""
    import ast
    import re

    root = Path(__file__).resolve().parent.parent / "loadkit"
    dests = {m.group(1)[2:].replace("-", "_") for f in root.rglob("*.py")
             for m in re.finditer(r'add_argument\(\s*"(--[a-z0-9-]+)"', f.read_text())}
    assert {"sweep_rates", "arrival_max_lag", "metrics_host", "loadkit_phase_rows", "ktb_timeout"} <= dests
    repeated = []
    for path in root.rglob("*.py"):
        if "targets" in path.relative_to(root).parts:
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "getattr"
                    and len(n.args) == 3 and isinstance(n.args[1], ast.Constant) and n.args[1].value in dests
                    and not (isinstance(n.args[2], ast.Constant) and n.args[2].value is None)):
                repeated.append(f"{path.relative_to(root)}:{n.lineno}: {ast.unparse(n)}")
    assert not repeated, "\n".join(repeated)


def test_a_dest_the_parser_lacks_rebuilds_it_once_per_set_of_imported_modules(monkeypatch):
    from loadkit import options

    built = []
    import locust.argument_parser as ap

    real = ap.get_parser
    monkeypatch.setattr(ap, "get_parser", lambda **kw: built.append(1) or real(**kw))
    options._UNKNOWN.pop("no_such_option_anywhere", None)
    for _ in range(5):
        assert options.default("no_such_option_anywhere") is None
    assert len(built) == 1
