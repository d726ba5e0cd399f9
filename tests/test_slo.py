"""``--slo``: the grammar and the judgement, with literal expressions and literal figures."""

from __future__ import annotations

import pytest

from loadkit.metrics.histograms import OpHistogram
from loadkit.metrics.slo import Figures, SloError, evaluate, parse, parse_all, split_expressions


def hist(*values_ms: float) -> OpHistogram:
    op = OpHistogram()
    op.record_many_ms(list(values_ms))
    return op


def test_parse_the_issue_examples():
    s = parse("ttft:p95<500ms")
    assert (s.type, s.name, s.stat, s.percentile, s.op, s.target, s.unit) == (None, "ttft", "p95", 95.0, "<", 500.0, "ms")
    s = parse("sendmsg:fail_rate<1%")
    assert (s.stat, s.target, s.unit) == ("fail_rate", 0.01, "%")
    s = parse("delivery:p99.9<1s")
    assert (s.percentile, s.target, s.unit) == (99.9, 1000.0, "s")
    s = parse("chatMessage:rps>1000")
    assert (s.stat, s.op, s.target, s.unit) == ("rps", ">", 1000.0, "/s")
    s = parse(" chldo:connect : max <= 2.5 s ")
    assert (s.type, s.name, s.stat, s.op, s.target) == ("chldo", "connect", "max", "<=", 2500.0)
    s = parse("POST:/api/auth/login:mean>=0.5")  # a bare number is the figure's own unit (ms)
    assert (s.type, s.name, s.stat, s.op, s.target, s.unit) == ("POST", "/api/auth/login", "mean", ">=", 0.5, "")
    assert parse("sendmsg:fail_rate<=0.02").target == 0.02


@pytest.mark.parametrize("text, words", [
    ("ttft<500ms", "expected"),
    ("ttft:p95<>500", "expected"),
    ("ttft:p95 500ms", "expected"),
    ("ttft:p95<500min", "expected"),
    ("ttft:p0<5ms", "percentile"),
    ("ttft:p101<5ms", "percentile"),
    ("ttft:p95<5%", "fail_rate, goodput and rps"),
    ("sendmsg:fail_rate<5ms", "fail_rate takes"),
    ("sendmsg:fail_rate<2", "at most 100"),
    ("sendmsg:rps>5ms", "rps takes"),
    ("chldo:chunks:p50>5ms", "count"),
    (":ttft:p95<5ms", "no name"),
    ("ttft:p95<-5ms", ">= 0"),
    ("", "expected"),
])
def test_bad_expressions_are_one_line(text, words):
    with pytest.raises(SloError) as info:
        parse(text)
    message = str(info.value)
    assert words in message and "\n" not in message
    assert message.startswith("--slo ")


def test_repeated_and_semicolon_separated_values():
    assert split_expressions(None) == []
    assert split_expressions("a:p95<1ms; b:max<2s;") == ["a:p95<1ms", "b:max<2s"]
    assert split_expressions(["a:p95<1ms", "b:max<2s;c:rps>1"]) == ["a:p95<1ms", "b:max<2s", "c:rps>1"]
    assert [s.name for s in parse_all(["ttft:p95<500ms;sendmsg:fail_rate<1%"])] == ["ttft", "sendmsg"]
    with pytest.raises(SloError):
        parse_all(["ttft:p95<500ms", "nonsense"])


def test_percentile_slo_on_a_metric_and_the_console_line():
    values = [300.0 + i * 0.1 for i in range(100)]  # 300.0 .. 309.9 ms; p95 = 309.4
    figures = Figures(metrics={("chldo", "ttft"): hist(*values)})
    ok = evaluate(parse("ttft:p95<500ms"), figures)
    assert ok.passed and abs(ok.measured - 309.4) < 0.31
    assert ok.line() == f"PASS ttft p95 {ok.measured:.1f} ms < 500 ms"
    bad = evaluate(parse("ttft:p95<200ms"), figures)
    assert not bad.passed
    assert bad.line() == f"FAIL ttft p95 {bad.measured:.1f} ms < 200 ms"
    assert evaluate(parse("ttft:p95<0.5s"), figures).line() == f"PASS ttft p95 {ok.measured / 1000:.3g} s < 0.5 s"
    row = bad.row()
    assert (row["Result"], row["Target"], row["Unit"], row["Stat"]) == ("FAIL", "200", "ms", "p95")
    assert float(row["Measured"]) == pytest.approx(bad.measured, abs=0.05)
    assert evaluate(parse("ttft:max<=309.9"), figures).passed  # exact max
    assert not evaluate(parse("ttft:max<309.9"), figures).passed
    assert evaluate(parse("ttft:mean>=304.95"), figures).passed and not evaluate(parse("ttft:mean>304.96"), figures).passed
    assert evaluate(parse("ttft:min>=300"), figures).passed


def test_fail_rate_and_rps_come_from_the_request_counts():
    figures = Figures(
        requests={("chldo", "sendmsg"): hist(*[100.0] * 200)},
        counts={("chldo", "sendmsg"): (200, 3, 19.5), ("chldo", "connect"): (10, 0, 1.0)},
    )
    r = evaluate(parse("sendmsg:fail_rate<1%"), figures)
    assert not r.passed and r.measured == 0.015
    assert r.line() == "FAIL sendmsg fail_rate 1.5% < 1%"
    assert evaluate(parse("sendmsg:fail_rate<2%"), figures).passed
    assert evaluate(parse("sendmsg:rps>=19.5"), figures).passed
    assert evaluate(parse("sendmsg:rps>20"), figures).line() == "FAIL sendmsg rps 19.5/s > 20/s"
    assert evaluate(parse("Aggregated:rps>20"), figures).passed  # 19.5 + 1.0
    assert evaluate(parse("Aggregated:fail_rate<=0.0143"), figures).passed  # 3 / 210


def test_no_samples_ambiguous_names_and_metric_rps_fail():
    figures = Figures(
        requests={("chldo", "connect"): hist(5.0), ("ktb", "connect"): hist(50.0)},
        metrics={("chldo", "ttft"): hist(300.0)},
        counts={("chldo", "connect"): (1, 0, 1.0), ("ktb", "connect"): (1, 0, 1.0)},
    )
    missing = evaluate(parse("tfft:p95<500ms"), figures)
    assert not missing.passed and missing.measured is None and "did you mean ttft" in missing.detail
    assert missing.line().startswith("FAIL tfft p95 (no samples; did you mean ttft?) < 500 ms")
    amb = evaluate(parse("connect:p95<500ms"), figures)
    assert not amb.passed and "chldo:connect or ktb:connect" in amb.detail
    assert evaluate(parse("chldo:connect:p95<10ms"), figures).passed
    assert not evaluate(parse("ktb:connect:p95<10ms"), figures).passed
    assert "is a metric" in evaluate(parse("ttft:rps>1"), figures).detail
    assert evaluate(parse("Aggregated:max<=50ms"), figures).passed
    assert not evaluate(parse("Aggregated:max<50ms"), figures).passed


def test_abort_tracking_needs_a_continuous_failure_and_ignores_no_samples():
    from loadkit.metrics import slo_gate
    from loadkit.metrics.slo import Result

    a, b = parse("ttft:p95<200ms"), parse("sendmsg:p95<1s")
    slo_gate._state.update(slos=[a, b], failing_since={}, abort_after=30.0, results=[], aborted=None, final=None)
    fail_a, pass_a = Result(a, False, 300.0), Result(a, True, 100.0)
    none_b = Result(b, False, None, "no samples")
    assert slo_gate._track([fail_a, none_b], now=100.0) is None
    assert slo_gate._track([fail_a, none_b], now=129.9) is None
    assert slo_gate._track([pass_a, none_b], now=131.0) is None  # the break restarts the clock
    assert slo_gate._track([fail_a, none_b], now=140.0) is None
    assert slo_gate._track([fail_a, none_b], now=170.0) is fail_a
    slo_gate._state["results"] = [fail_a, none_b]
    status = slo_gate.live_status()
    assert [(r["SLO"], r["Result"]) for r in status["slos"]] == [("ttft:p95<200ms", "FAIL"), ("sendmsg:p95<1s", "FAIL")]
    assert status["slos"][0]["failing_for"] > 0 and status["slos"][1]["failing_for"] == 0.0
    slo_gate._state.update(abort_after=None)
    assert slo_gate._track([fail_a], now=1000.0) is None  # without --slo-abort-after: never


def test_abort_after_durations():
    from loadkit.metrics.slo_gate import abort_after_seconds

    assert abort_after_seconds("") is None and abort_after_seconds(None) is None
    assert abort_after_seconds("30s") == 30 and abort_after_seconds("1m30s") == 90 and abort_after_seconds("2.5") == 2.5
    for bad in ("soon", "0", "-3s"):
        with pytest.raises(ValueError):
            abort_after_seconds(bad)


def test_goodput_slo_is_the_share_of_good_requests():
    figures = Figures(goodput={("chldo", "sendmsg"): (19, 20)})
    r = evaluate(parse("sendmsg:goodput>=95%"), figures)
    assert r.passed and r.measured == 0.95 and r.line() == "PASS sendmsg goodput 95.0% >= 95%"
    assert not evaluate(parse("sendmsg:goodput>0.96"), figures).passed
    missing = evaluate(parse("connect:goodput>=0.9"), figures)
    assert not missing.passed and "--goodput" in missing.detail
    with pytest.raises(SloError):
        parse("sendmsg:goodput>95ms")


def test_aggregated_of_one_type():
    figures = Figures(requests={("ktb", "chatMessage"): hist(10.0), ("POST", "/api/auth/login"): hist(90.0)},
                      counts={("ktb", "chatMessage"): (100, 1, 10.0), ("POST", "/api/auth/login"): (10, 5, 1.0)})
    assert evaluate(parse("ktb:Aggregated:max<=10ms"), figures).passed
    assert not evaluate(parse("Aggregated:max<=10ms"), figures).passed
    assert evaluate(parse("ktb:Aggregated:fail_rate"+"<=1%"), figures).measured == 0.01
    assert evaluate(parse("Aggregated:fail_rate<=6%"), figures).measured == pytest.approx(6 / 110)
