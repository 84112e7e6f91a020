"""bench/run_all.py builds its table from saved results without running a benchmark: every row is
there, the ratios are the files' own, and what is missing says so instead of crashing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    "corpus pipeline, same blocks with gptnl's regex tokeniser",
    "corpus pipeline, gptnl's whole default recipe",
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
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
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
        "benchmark": "sweep_scaling", "cells": 8, "requests_per_run": 23, "service_ms": 20.0,
        "sequential_s": 4.5, "ray_s": 3.0, "workers": 2, "speedup": 1.5, "goal": ">= 1.8x",
        "machine": "x86_64, cpu, 2 cores"}))
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
    assert (sweep["ours"].split(" (")[0], sweep["peer's figure"], sweep["ratio"], sweep["met?"]) == \
        ("3.00 s", "4.50 s", "1.50×", "no")
    sft = rows["fine-tuning throughput (`gptnl finetune`)"]
    assert (sft["ours"], sft["ratio"], sft["met?"]) == ("no result yet", "—", "—")
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
