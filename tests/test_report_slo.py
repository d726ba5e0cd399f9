"""``loadkit report`` shows each Locust run's ``<prefix>_slo.csv`` at the top of the page."""

from __future__ import annotations

import html as html_lib
import shutil

from report_helpers import FIXTURES, run_report_inproc

PLAIN = FIXTURES / "locust" / "chldo_full"  # a recorded local run without an SLO file
HEADER = "SLO,Type,Name,Stat,Op,Target,Measured,Unit,Result,Detail\n"
GOODPUT_HEADER = "Type,Name,Targets,Requests,Good,Goodput %,Good/s,Requests/s\n"
SWEEP = ("Stage,Kind,Offered/s,Achieved/s,Iterations,Dropped,Lag p99 ms,p50 ms,p95 ms,p99 ms,Goodput %,Passed,Detail,"
         "ttft:p95<500ms\n"
         "synchronous,synchronous,,2.748,11,0,,302.3,305.4,306.0,100.00,yes,,305.4\n"
         "throughput,throughput,,10.999,44,0,,1824.8,1835.0,1835.2,0.00,no,FAIL ttft p95 1835.0 ms < 500 ms,1835.0\n"
         "constant-1,constant,5.000,5.000,20,0,1.1,301.5,303.1,305.5,100.00,yes,,303.1\n"
         "constant-2,constant,8.000,8.000,32,0,1.6,301.8,306.2,306.2,100.00,yes,,306.2\n"
         "constant-3,constant,11.000,10.900,44,0,9.3,900.0,1200.0,1300.0,40.00,no,FAIL ttft p95 1200.0 ms < 500 ms,1200.0\n")


def _copy_run(tmp_path, name="run"):
    for src in PLAIN.parent.glob(PLAIN.name + "_*"):
        shutil.copy(src, tmp_path / (name + src.name[len(PLAIN.name):]))
    return tmp_path / name


def test_slo_goodput_and_sweep_sections_are_at_the_top(tmp_path):
    prefix = _copy_run(tmp_path)
    (tmp_path / "run_slo.csv").write_text(
        HEADER + "ttft:p95<500ms,,ttft,p95,<,500,312.4,ms,PASS,\n"
        "sendmsg:fail_rate<1%,,sendmsg,fail_rate,<,1,2.5,%,FAIL,\n"
        "nope:p50<1ms,,nope,p50,<,1,,ms,FAIL,no samples\n")
    (tmp_path / "run_goodput.csv").write_text(
        GOODPUT_HEADER + 'chldo,sendmsg,"ttft<500ms, sendmsg<5s",200,190,95.00,9.500,10.000\n')
    (tmp_path / "run_sweep.csv").write_text(SWEEP)
    out = tmp_path / "out"
    res = run_report_inproc("--locust", f"L={prefix}", "--out", str(out))
    assert res.returncode == 0, res.stderr
    page = html_lib.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert page.index("Service level objectives") < page.index("<h2>Summary</h2>")
    section = page[page.index("Service level objectives"):page.index("<h2>Summary</h2>")]
    assert "locust L: " in section and "2 of 3 failed" in section
    assert '<td class="l">PASS</td><td class="l">ttft:p95<500ms</td><td>312.4</td><td class="l"><</td><td>500</td>' in section
    assert '<td class="l bad">FAIL</td><td class="l">sendmsg:fail_rate<1%</td><td>2.5</td>' in section
    assert '<td class="l bad">FAIL</td><td class="l">nope:p50<1ms</td><td>–</td>' in section and "no samples" in section
    goodput = page[page.index('<h2 id="goodput">'):page.index("<h2>Summary</h2>")]
    assert ('<td class="l">sendmsg</td><td class="l">ttft<500ms, sendmsg<5s</td><td>200</td><td>190</td>'
            '<td>95.00</td><td>9.500</td><td>10.000</td>') in goodput
    sweep = page[page.index('<h2 id="sweep">'):page.index("<h2>Summary</h2>")]
    assert "capacity 8.00/s: the highest constant arrival rate at which every SLO held" in sweep
    assert 'alt="knee chart" src="data:image/png;base64,iVBOR' in sweep  # an embedded PNG
    assert "<th>ttft:p95<500ms</th>" in sweep
    assert '<td>constant-3</td><td>11.000</td><td>10.900</td>' in sweep and '<td class="l bad">no</td>' in sweep


def test_no_slo_file_no_section(tmp_path):
    prefix = _copy_run(tmp_path)
    out = tmp_path / "out"
    res = run_report_inproc("--locust", str(prefix), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "Service level objectives" not in (out / "report.html").read_text(encoding="utf-8")


def test_a_broken_slo_file_is_an_input_error_naming_it(tmp_path):
    prefix = _copy_run(tmp_path)
    bad = tmp_path / "run_slo.csv"
    for text, says in ((HEADER + "ttft:p95<500ms,,ttft,p95,<,500,312.4,ms,MAYBE,\n", "line 2"),
                       ("", "empty file")):
        bad.write_text(text)
        res = run_report_inproc("--locust", str(prefix), "--out", str(tmp_path / "out"))
        assert res.returncode == 2, (text, res.stdout, res.stderr)
        assert str(bad) in res.stderr and says in res.stderr, (text, res.stderr)






def test_broken_goodput_and_sweep_files_are_input_errors_naming_them(tmp_path):
    prefix = _copy_run(tmp_path)
    gp = tmp_path / "run_goodput.csv"
    gp.write_text(GOODPUT_HEADER + "chldo,sendmsg,x,many,1,1,1,1\n")
    res = run_report_inproc("--locust", str(prefix), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and str(gp) in res.stderr and "line 2" in res.stderr, res.stderr
    gp.unlink()
    (tmp_path / "run_sweep.csv").write_text("Stage,Kind\nx,constant\n")
    res = run_report_inproc("--locust", str(prefix), "--out", str(tmp_path / "out2"))
    assert res.returncode == 2 and "run_sweep.csv" in res.stderr and "no column" in res.stderr, res.stderr
