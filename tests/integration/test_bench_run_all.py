"""bench/run_all.py builds its table from saved results without running a benchmark: every row is
there, the ratios are the files' own, and what is missing says so instead of crashing; `--quick`
runs every benchmark at its smallest sizes and exits 0; each run's rows join the history, and the
table shows the latest, best and worst of the last runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_serving import vllm_python  # noqa: F401 (a fixture: the evaluation row serves vLLM)

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    "corpus pipeline, same blocks with gptnl's regex tokeniser",
    "corpus pipeline, gptnl's whole default recipe",
    "corpus pipeline at scale (whole recipe; time vs linear, peak RSS per stage)",
    "packing (`gptnl pack`, 1 and 2 workers)",
    "packing, 2 workers over 1",
    "training throughput (same DeepSpeed engine)",
    "gateway overhead (auth, limits, guard, audit on)",
    "fine-tuning throughput (`gptnl finetune`)",
    "evaluation sweep on Ray",
    "evaluation throughput (`gptnl eval run`, Belebele-shaped multiple choice)",
    "training MFU, 125m (bf16, ZeRO-2, one GPU)",
    "training MFU, 1b (bf16, ZeRO-2, one GPU)",
    "vLLM throughput of the exported model (GPU)",
]
HEADER = ["benchmark", "peer", "ours", "peer's figure", "ratio", "goal", "met?", "machine", "when"]


def table(markdown: str) -> dict[str, dict[str, str]]:
    """The results table: the first run of table lines (the history table comes after it)."""
    text = markdown.splitlines()
    first = next(i for i, line in enumerate(text) if line.startswith("| "))
    lines = []
    for line in text[first:]:
        if not line.startswith("|"):
            break
        if line.startswith("| "):
            lines.append(line)
    assert lines[0] == "| " + " | ".join(HEADER) + " |"
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[1:]]
    assert all(len(r) == len(HEADER) for r in rows)
    return {r[0]: dict(zip(HEADER, r, strict=True)) for r in rows}


def test_reuse_builds_the_whole_table_from_saved_files(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "train_throughput.json").write_text(json.dumps({
        "benchmark": "train_throughput", "model": "tiny", "seq_len": 256, "batch": 8, "zero_stage": 2,
        "precision": "fp32", "device": "cpu", "threads": 2, "ours_tokens_per_s": 5000.0,
        "peer_tokens_per_s": 4000.0, "ratio": 1.25, "goal": ">= 1.0", "ours_tflops": 0.1}))
    (results / "sweep_scaling.json").write_text(json.dumps({
        "benchmark": "sweep_scaling", "task": "kennis", "cells": 16, "requests_per_run": 320, "service_ms": 100.0,
        "sequential_s": 33.0, "cpu_s_per_cell": 0.2, "service_s_per_cell": 2.0, "goal": ">= 0.9*N x on N workers",
        "runs": [{"workers": 2, "ray_s": 17.0, "speedup": 1.94}, {"workers": 4, "ray_s": 8.9, "speedup": 3.71},
                 {"workers": 8, "ray_s": 6.0, "speedup": 5.5}],
        "machine": "x86_64, cpu, 2 cores"}))
    (results / "pack_throughput.json").write_text(json.dumps({
        "benchmark": "pack_throughput", "docs": 40000, "files": 16, "tokens": 9058228, "ratio": 1.438,
        "runs": [{"workers": 1, "gptnl_s": 12.123, "datatrove_s": 18.859, "ratio": 1.556},
                 {"workers": 2, "gptnl_s": 6.737, "datatrove_s": 9.686, "ratio": 1.438}],
        "scaling_2_over_1": 1.799, "datatrove_scaling_2_over_1": 1.947, "same_shards_1_and_2_workers": True,
        "machine": "x86_64, 2 cores"}))
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--reuse", "--results", str(results),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = table(out.read_text())

    assert list(rows) == ROWS
    train = rows["training throughput (same DeepSpeed engine)"]
    assert (train["ours"].startswith("5,000 tokens/s"), train["peer's figure"], train["ratio"], train["met?"]) == \
        (True, "4,000 tokens/s", "1.25×", "yes")
    assert train["when"].startswith("saved file, ") and train["machine"] == "as recorded: cpu, 2 threads"
    sweep = rows["evaluation sweep on Ray"]
    assert sweep["ours"].startswith("2 workers 17.00 s = 1.94×, 4 workers 8.90 s = 3.71×, 8 workers 6.00 s = 5.50×")
    assert (sweep["peer's figure"], sweep["ratio"], sweep["met?"]) == ("33.00 s", "5.50×", "no")  # 5.5 < 0.9 × 8
    pack = rows["packing (`gptnl pack`, 1 and 2 workers)"]
    assert pack["ours"].startswith("1 worker(s) 12.12 s = 1.55×, 2 worker(s) 6.74 s = 1.43× (9,058,228 tokens")
    assert (pack["peer's figure"], pack["ratio"], pack["met?"]) == ("18.86 s, 9.69 s", "1.43×", "yes")
    scaling = rows["packing, 2 workers over 1"]
    assert (scaling["ratio"], scaling["met?"]) == ("1.79×", "no")  # cut, not rounded: 1.799 < 1.8
    sft = rows["fine-tuning throughput (`gptnl finetune`)"]
    why = "no result yet" if importlib.util.find_spec("trl") else \
        "not run: needs TRL (`pip install -c constraints.txt -e '.[bench]'`)"
    assert (sft["ours"], sft["ratio"], sft["met?"]) == (why, "—", "—")
    if not torch.cuda.is_available():
        for label in ROWS[-3:]:
            assert rows[label]["ours"] == "not measured: no GPU on this machine"


def test_a_failing_benchmark_is_reported_not_raised(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_all", run_all)  # dataclasses look their module up there
    spec.loader.exec_module(run_all)
    bench = run_all.Bench("boom", (("boom", "—"),), "—", ("-c", "import sys; sys.exit('out of memory')"))
    cmd = [sys.executable, *bench.argv, "--out", str(tmp_path / "boom.json")]
    data, reason, machine, _ = run_all.outcome(bench, cmd, tmp_path / "boom.json", True, "here")
    assert (data, reason, machine) == (None, "failed (exit 1): out of memory", "here")


def load_run_all(monkeypatch):
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_all", run_all)  # dataclasses look their module up there
    spec.loader.exec_module(run_all)
    return run_all


def test_history_shows_the_latest_best_and_worst_of_the_last_runs(tmp_path, monkeypatch):
    run_all = load_run_all(monkeypatch)
    path = tmp_path / "history.jsonl"
    for day, ratio in [(1, 0.8), (2, 1.6), (3, 1.1), (4, 1.3)]:
        run_all.append_history(path, [{"date": f"2026-12-0{day}T10:00:00Z", "commit": f"c{day}", "machine": "m",
                                       "benchmark": "training", "ratio": ratio, "met": ratio >= 1}])
    with open(path, "a") as fh:
        fh.write('{"date": "2026-12-05T10:00:00Z", "commit": "c5", "bench')  # a run killed mid-line
    rows = run_all.read_history(path)
    assert [r["commit"] for r in rows] == ["c1", "c2", "c3", "c4"]
    table = run_all.history_table(rows, ["training", "never run"], runs=3)
    assert table[2:4] == ["| benchmark | runs | latest | best | worst |", "|---|---|---|---|---|"]
    assert table[4] == "| training | 3 | 1.30× (2026-12-04, c4) | 1.60× (2026-12-02, c2) | 1.10× (2026-12-03, c3) |"
    assert len(table) == 6  # no line for a row that never ran


@pytest.mark.slow
def test_quick_run_measures_every_cpu_row_and_appends_the_history(tmp_path, vllm_python):  # noqa: F811
    results, out = tmp_path / "results", tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick", "--results", str(results),
                           "--out", str(out), "--model", str(tmp_path / "no-model")],
                          capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = table(out.read_text())
    measured = [label for label, r in rows.items() if r["when"].startswith("this run")]
    for label in ("corpus pipeline, same blocks with gptnl's regex tokeniser", "packing", "training throughput",
                  "evaluation sweep on Ray", "evaluation throughput (`gptnl eval run`"):
        assert any(m.startswith(label) for m in measured), (label, measured)
    sft = rows["fine-tuning throughput (`gptnl finetune`)"]
    if importlib.util.find_spec("trl") is None:  # the test extra has no TRL; the bench extra has
        assert sft["ours"] == "not run: needs TRL (`pip install -c constraints.txt -e '.[bench]'`)", sft
    else:
        assert sft["when"].startswith("this run"), sft
    for label, row in rows.items():  # the others say why they did not run (no GPU, no demo model)
        assert label in measured or row["ours"].startswith(("not run:", "not measured:")), row
    assert rows["gateway overhead (auth, limits, guard, audit on)"]["ours"].startswith("not run: needs `gptnl demo`")
    history = [json.loads(line) for line in (results / "history.jsonl").read_text().splitlines()]
    assert sorted(h["benchmark"] for h in history) == sorted(measured)
    assert all(h["quick"] and h["commit"] and h["machine"] and h["date"] for h in history)
    assert "| benchmark | runs | latest | best | worst |" in out.read_text()
