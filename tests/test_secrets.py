"""Secrets never written (issue #15 item 6): passwords, tokens, session ids and API keys are masked
in every failure text, also when a server echoes them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadkit.procs import free_port, loadkit_argv
from loadkit.redact import redact, redact_exception

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = str(Path(__file__).with_name("hostile_server.py"))
KEY = "sk-live-7f3a9c2e41"


def test_redact_masks_keyed_values_tokens_ids_and_literal_secrets():
    body = '{"email":"u@x.test","password":"hunter2!","token":"abc.def"}'
    assert redact(f"HTTP 400: {body}") == 'HTTP 400: {"email":"u@x.test","password":"***","token":"***"}'
    assert redact("Authorization: Bearer abcdef123") == "Authorization: Bearer ***"
    assert redact("got eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoxfQ.c2lnbmF0dXJl back") == "got *** back"
    assert redact("sid 3f2a0c9d4b1e8f7a6c5d4e3f2a1b0c9d3f2a0c9d4b1e8f7a6c5d4e3f2a1b0c9d") == "sid ***"
    assert redact(f"key {KEY} refused", [KEY]) == "key *** refused"
    kept = "api_key is required; 채팅방 접근 권한이 없습니다. (msg 42)"
    assert redact(kept) == kept  # server texts without secrets are untouched
    exc = ValueError(f"echo: {body}", 3)
    assert redact_exception(exc).args == ('echo: {"email":"u@x.test","password":"***","token":"***"}', 3)


@pytest.mark.timeout(90)
def test_a_server_echoing_the_api_key_leaves_it_in_no_output(spawn, tmp_path):
    port = free_port()
    spawn([sys.executable, HOSTILE, str(port), "echo-error"], port=port, name="hostile")
    prefix = tmp_path / "run"
    locust = spawn([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "chldo_stream.py"), "--headless",
                    "-u", "2", "-r", "2", "-t", "4s", "--host", f"ws://127.0.0.1:{port}", "--csv", str(prefix),
                    "--chldo-api-key", KEY, "--chldo-think-time", "0.2"], name="locust")
    assert locust.wait(60) == 1  # every turn failed: the server answered each with an error
    report = spawn(loadkit_argv("report", "--locust", str(prefix), "--out", str(tmp_path / "report")), name="report")
    assert report.wait(120) == 0, report.output()[-2000:]
    failures = Path(f"{prefix}_failures.csv").read_text()
    assert "ChldoValidationError('bad request:" in failures and '""api_key"":""***""' in failures, failures
    outputs = {p.name: p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()}
    assert outputs and not [name for name, text in outputs.items() if KEY in text], \
        [name for name, text in outputs.items() if KEY in text]
