"""Run every benchmark under bench/ and write one table of results, bench/RESULTS.md.

Why one table: an absolute figure (docs/s, tokens/s) says more about the machine than about
gptnl, so every benchmark here measures gptnl against a peer (datatrove, HF transformers, vLLM,
TRL, a sequential sweep) in the same run on the same machine, and the ratio is the figure a reader
can trust. The table puts each ratio beside its goal, whether it is met, the machine and the date;
figures that come from an earlier run's saved JSON say so, and rows nothing measured say why.

    python bench/run_all.py                                 # run all this machine can run
    python bench/run_all.py --only sweep_scaling            # run one; other rows from the saved JSON
    python bench/run_all.py --reuse                         # run nothing; table from bench/results/
    python bench/run_all.py --model runs/demo/sft/model --results bench/results --out bench/RESULTS.md
    python bench/run_all.py --quick                         # smallest sizes: checks the wiring, not the speed

Every run appends the rows it measured (date, commit, machine) to `<results>/history.jsonl`, and the
table is followed by the latest, best and worst ratio of each row over the last runs, so that a
regression shows. The peers need the `bench` extra: `pip install -c constraints.txt -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gptnl.fileio import atomic_write_json, atomic_write_text
from gptnl.trainer.metrics import PEAK_TFLOPS

ROOT = Path(__file__).resolve().parent.parent
NO_GPU = "not measured: no GPU on this machine"
# ours, peer's figure, ratio, met? — one per row of a benchmark
Figures = tuple[str, str, str, bool]


@dataclass(frozen=True)
class Bench:
    name: str  # --only name and results file stem
    rows: tuple[tuple[str, str], ...]  # (row label, goal) per table row
    peer: str
    argv: tuple[str, ...]  # script and arguments (run_all adds --out); () when nothing measures it
    figures: Callable[[dict], list[Figures]] | None = None
    blocked: str | None = None  # why it cannot run on this machine


def times(ratio: float) -> str:
    """Cut, not rounded, so that a ratio just under its goal never prints as meeting it."""
    return f"{math.floor(ratio * 100) / 100:.2f}×"


def pipeline(d: dict) -> list[Figures]:
    peer = f"{d['peer_docs_per_s']:,.0f} docs/s"
    return [(f"{d['same_blocks_regex_docs_per_s']:,.0f} docs/s ({d['kept_agreement']:.2%} kept-set agreement)",
             peer, times(d["ratio_same_blocks"]), d["ratio_same_blocks"] >= 5 and d["kept_agreement"] >= 0.99),
            (f"{d['full_recipe_docs_per_s']:,.0f} docs/s", peer, times(d["ratio_full_recipe"]),
             d["ratio_full_recipe"] >= 5)]


def scale(d: dict) -> list[Figures]:
    """The largest corpus against the smallest: time against its linear share, and peak RSS."""
    small, large, g = d["sizes"][0], d["sizes"][-1], d["growth"]

    def size(s: dict) -> str:
        return f"{s['docs']:,} docs: {s['docs_per_s']:,.0f} docs/s, peak RSS {s['peak_rss_mib']:,.0f} MiB"
    return [(f"{size(large)} ({large['peak_stage']}; {g['peak_rss_factor']:.2f}× the smaller's)", size(small),
             times(g["time_vs_linear"]), g["time_vs_linear"] <= 1.1 and g["peak_rss_factor"] <= 1.2)]


def pack_rows(d: dict) -> list[Figures]:
    """Per worker count against datatrove at the same count, and our 2-worker scaling."""
    r1, r2 = d["runs"]
    each = ", ".join(f"{r['workers']} worker(s) {r['gptnl_s']:.2f} s = {times(r['ratio'])}" for r in d["runs"])
    same = "same shards from 1 and 2 workers" if d["same_shards_1_and_2_workers"] else "shards DIFFER, 1 vs 2 workers"
    return [(f"{each} ({d['tokens']:,} tokens, {d['files']} files; {same})",
             f"{r1['datatrove_s']:.2f} s, {r2['datatrove_s']:.2f} s", times(d["ratio"]),
             d["ratio"] >= 1.0 and d["same_shards_1_and_2_workers"]),
            (f"{r2['gptnl_s']:.2f} s on 2 workers (datatrove's own: {times(d['datatrove_scaling_2_over_1'])})",
             f"{r1['gptnl_s']:.2f} s on 1", times(d["scaling_2_over_1"]), d["scaling_2_over_1"] >= 1.8)]


def compiled(d: dict) -> str:
    if not d.get("compile"):
        return ""
    return "compiled, " if d.get("compile_mode", "default") == "default" else f"compiled ({d['compile_mode']}), "


def train(d: dict) -> list[Figures]:
    check = (f"; compiled vs eager loss over {d['compile_check_steps']} steps within "
             f"{d['compile_max_rel_loss_diff']:.0e} relative") if "compile_max_rel_loss_diff" in d else ""
    return [(f"{d['ours_tokens_per_s']:,.0f} tokens/s ({d['model']}, {d['precision']}, "
             f"{d['batch']}×{d['seq_len']} tokens, {compiled(d)}{d['device']}{check})",
             f"{d['peer_tokens_per_s']:,.0f} tokens/s", times(d["ratio"]), d["ratio"] >= 1.1)]


def train_mfu(d: dict) -> list[Figures]:
    """MFU against the GPU's dense bf16 peak as the trainer knows it (gptnl.trainer.metrics)."""
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in d["device"]), None)
    mfu = f"MFU {d['ours_tflops'] / peak:.1%} of the {peak:g} TFLOP/s bf16 peak" if peak else \
        f"MFU: no known peak for {d['device']}"
    return [(f"{d['ours_tokens_per_s']:,.0f} tokens/s, {d['ours_tflops']:.1f} TFLOP/s ({mfu})",
             f"{d['peer_tokens_per_s']:,.0f} tokens/s", times(d["ratio"]), d["ratio"] >= 1.0)]


def gateway(d: dict) -> list[Figures]:
    vllm, gw = (statistics.median(r["rps"] for r in d["rounds"][k]) for k in ("vllm", "gateway"))
    return [(f"{gw:.1f} req/s ({d['clients']} clients); one client: {d['added_p50_ms']:+.2f} ms p50, "
             f"{d['added_p99_ms']:+.2f} ms p99", f"{vllm:.1f} req/s", times(d["throughput_ratio"]),
             d["throughput_ratio"] >= 0.95 and d["added_p50_ms"] <= 2)]


def sft(d: dict) -> list[Figures]:
    tools = d.get("tool_conversations_left_out")
    left_out = f", {tools} tool-use ones left out" if tools is not None else ""
    return [(f"{d['gptnl_tokens_per_s']:,.0f} tokens/s ({d['backend']}; loss masks differ in "
             f"{d['masks_mismatched']} of {d['conversations']} conversations{left_out})",
             f"{d['trl_tokens_per_s']:,.0f} tokens/s", times(d["ratio"]),
             d["ratio"] >= 2.0 and d["masks_mismatched"] == 0)]


def sweep(d: dict) -> list[Figures]:
    """One row for 2, 4 and 8 workers: each speed-up against its own goal (0.9·N); the ratio shown is
    the one at the most workers."""
    runs = d["runs"]
    each = ", ".join(f"{r['workers']} workers {r['ray_s']:.2f} s = {times(r['speedup'])}" for r in runs)
    return [(f"{each} ({d['cells']} cells, {d['service_ms']:g} ms a request)", f"{d['sequential_s']:.2f} s",
             times(runs[-1]["speedup"]), all(r["speedup"] >= 0.9 * r["workers"] for r in runs))]


def eval_throughput(d: dict) -> list[Figures]:
    same = d["choices_differ"] == 0 and abs(d["gptnl_accuracy"] - d["lm_eval_accuracy"]) < 1e-9
    agree = f"same choice on all {d['items']} items" if d["choices_differ"] == 0 else \
        f"choices differ on {d['choices_differ']} of {d['items']} items"
    return [(f"{d['gptnl_items_per_s']:,.1f} items/s ({agree}; accuracy {d['gptnl_accuracy']:.3f} vs "
             f"{d['lm_eval_accuracy']:.3f})", f"{d['lm_eval_items_per_s']:,.1f} items/s", times(d["ratio"]),
             d["ratio"] >= 2 and same)]


def benchmarks(model: Path, cuda: bool) -> list[Bench]:
    def missing(module: str, name: str) -> str | None:
        """Why a row cannot run here: its peer's package is not installed (the `bench` extra has it)."""
        if importlib.util.find_spec(module) is None:
            return f"not run: needs {name} (`pip install -c constraints.txt -e '.[bench]'`)"
        return None

    gpu = None if cuda else NO_GPU
    mfu_goal = "≥ 1.0 vs HF (MFU: no goal set)"
    return [
        Bench("pipeline_throughput",
              (("corpus pipeline, same blocks with gptnl's regex tokeniser", "≥ 5× at ≥ 99 % agreement"),
               ("corpus pipeline, gptnl's whole default recipe", "≥ 5×")),
              "datatrove stock chain (Gopher, repetition, C4 with spaCy `nl`, MinHash)",
              ("bench/pipeline_throughput.py",), pipeline, missing("spacy", "spaCy")),
        Bench("pipeline_scale", (("corpus pipeline at scale (whole recipe; time vs linear, peak RSS per stage)",
                                  "≤ 1.10× linear, peak RSS flat (≤ 1.2×)"),),
              "the same recipe on the smallest corpus", ("bench/pipeline_scale.py",), scale),
        Bench("pack_throughput", (("packing (`gptnl pack`, 1 and 2 workers)", "≥ 1.0× at each, same shards"),
                                  ("packing, 2 workers over 1", "≥ 1.8×")),
              "datatrove `JsonlReader` + `DocumentTokenizer` (same corpus, tokenizer, workers)",
              ("bench/pack_throughput.py",), pack_rows),
        Bench("train_throughput", (("training throughput (same DeepSpeed engine)", "≥ 1.1"),),
              "HF `LlamaForCausalLM` (sdpa, its own loss, eager)",
              ("bench/train_throughput.py", "--compile", "--compile-mode", "max-autotune-no-cudagraphs"), train),
        Bench("gateway_overhead", (("gateway overhead (auth, limits, guard, audit on)",
                                    "≥ 0.95 throughput, ≤ 2 ms added p50"),),
              "vLLM directly (same replica)", ("bench/gateway_overhead.py", "--model", rel(model)), gateway,
              None if model.is_dir() else "not run: needs `gptnl demo` first (the served model)"),
        Bench("sft_throughput", (("fine-tuning throughput (`gptnl finetune`)", "≥ 2.0, same loss masks"),),
              "TRL `SFTTrainer` (same data, batch, optimizer, steps)",
              ("bench/sft_throughput.py", "--backend", "deepspeed"), sft,
              missing("trl", "TRL") or missing("datasets", "datasets")),
        Bench("sweep_scaling", (("evaluation sweep on Ray", "≥ 0.9·N× on N = 2, 4, 8 workers"),),
              "the same sweep, cell after cell",
              ("bench/sweep_scaling.py",), sweep),
        Bench("eval_throughput", (("evaluation throughput (`gptnl eval run`, Belebele-shaped multiple choice)",
                                   "≥ 2×, same choices and accuracy"),),
              "`lm_eval --model local-completions` (same task, same vLLM server)", ("bench/eval_throughput.py",),
              eval_throughput, missing("lm_eval", "lm-eval")),
        Bench("train_mfu_125m", (("training MFU, 125m (bf16, ZeRO-2, one GPU)", mfu_goal),),
              "HF `LlamaForCausalLM`, same engine",
              ("bench/train_throughput.py", "--model", "configs/model/125m.yaml", "--seq-len", "2048", "--batch", "8",
               "--steps", "10", "--blocks", "3"), train_mfu, gpu),
        Bench("train_mfu_1b", (("training MFU, 1b (bf16, ZeRO-2, one GPU)", mfu_goal),),
              "HF `LlamaForCausalLM`, same engine",
              ("bench/train_throughput.py", "--model", "configs/model/1b.yaml", "--seq-len", "2048", "--batch", "4",
               "--steps", "5", "--blocks", "3"), train_mfu, gpu),
        Bench("vllm_gpu", (("vLLM throughput of the exported model (GPU)", "—"),), "—", (), None,
              gpu or "not measured: gateway_overhead.py serves vLLM with the `cpu` profile (fp32, eager), "
                     "so its direct-vLLM figure is no GPU figure"),
    ]


def rel(path: Path | str) -> str:
    path = Path(os.path.abspath(path))  # not resolve(): the venv's python is a symlink out of the tree
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def this_machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}"


def recorded_machine(d: dict) -> str:
    """The machine a saved file was measured on: run_all's note, else what the benchmark recorded."""
    if "run_all" in d:
        return d["run_all"]["machine"]
    parts = [str(d[k]) for k in ("device", "machine") if k in d]
    parts += [f"{d[k]} {k}" for k in ("cpus", "threads") if k in d]
    return "as recorded: " + ", ".join(parts) if parts else "not recorded"


def run(cmd: list[str]) -> tuple[int, str]:
    """Run one benchmark with its output shown; (exit status, last line of its stderr)."""
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, errors="replace")
    last = ""
    for line in proc.stderr:
        sys.stderr.write(line)
        last = line.strip() or last
    return proc.wait(), last


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


Outcome = tuple[dict | None, str | None, str, str]  # result JSON, why there is none, machine cell, when cell


def outcome(b: Bench, cmd: list[str], path: Path, run_it: bool, machine: str) -> Outcome:
    """Run a benchmark, or read its saved file when it is not to run here and now."""
    now = stamp(time.time())
    if run_it and (b.blocked or not cmd):
        return None, b.blocked, machine, now
    if run_it:
        start = time.time()
        rc, last = run(cmd)
        if rc == 0 and path.is_file() and path.stat().st_mtime >= start - 1:
            try:
                data = json.loads(path.read_text())
            except ValueError as e:
                return None, f"failed (exit 0, unreadable results file: {e})", machine, stamp(time.time())
            data["run_all"] = {"machine": machine, "command": shlex.join(["python", *cmd[1:]])}
            atomic_write_json(path, data)  # a later --reuse then knows the machine
            return data, None, machine, f"this run, {stamp(time.time())}"
        why = f"failed (exit {rc})" if rc else "failed (exit 0 but no new results file)"
        return None, f"{why}: {last}" if last else why, machine, stamp(time.time())
    if not path.is_file():
        return None, b.blocked or "no result yet", machine if b.blocked else "—", now if b.blocked else "—"
    when = f"saved file, {stamp(path.stat().st_mtime)}"
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        return None, f"unreadable saved file ({e})", "—", when
    return data, None, recorded_machine(data), when


# --quick: the smallest sizes each benchmark takes, so that a test can run the whole table in minutes
QUICK: dict[str, tuple[str, ...]] = {
    "pipeline_throughput": ("--docs", "600"),
    "pipeline_scale": ("--quick",),
    "pack_throughput": ("--docs", "2000", "--docs-per-file", "250", "--vocab", "2000", "--repeat", "1"),
    "train_throughput": ("--seq-len", "64", "--batch", "2", "--steps", "2", "--blocks", "2", "--check-steps", "2",
                         "--compile-mode", "default"),  # max-autotune's compile is a minute more; not the wiring
    "gateway_overhead": ("--clients", "2", "--seconds", "2", "--rounds", "1"),
    "sft_throughput": ("--steps", "4", "--global-batch", "4", "--micro-batch", "2", "--seq-len", "256"),  # 2 timed
    "sweep_scaling": ("--limit", "2", "--workers", "2"),
    "eval_throughput": ("--items", "30"),
    "train_mfu_125m": ("--steps", "2", "--blocks", "2"),
    "train_mfu_1b": ("--steps", "2", "--blocks", "2"),
}
HISTORY_RUNS = 10  # the best and worst of the last this many runs of a row


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def append_history(path: Path, rows: list[dict]) -> None:
    """One JSON line per row measured in this run; earlier lines are kept as they are."""
    if rows:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut off by a crash costs that line, not the history
        if isinstance(row, dict) and isinstance(row.get("ratio"), int | float) and "benchmark" in row:
            rows.append(row)
    return rows


def history_table(rows: list[dict], labels: list[str], runs: int = HISTORY_RUNS) -> list[str]:
    """Per row: how many runs, the latest ratio, the best and the worst of the last `runs` runs."""
    def cell(r: dict) -> str:
        return f"{r['ratio']:.2f}× ({r['date'][:10]}, {r['commit']})"  # as the table printed it

    lines = []
    for label in labels:
        last = [r for r in rows if r["benchmark"] == label][-runs:]
        if last:
            lines.append(f"| {label} | {len(last)} | {cell(last[-1])} | {cell(max(last, key=lambda r: r['ratio']))} "
                         f"| {cell(min(last, key=lambda r: r['ratio']))} |")
    if not lines:
        return []
    return [f"Last runs (at most {runs}; from `history.jsonl` beside the results):", "",
            "| benchmark | runs | latest | best | worst |", "|---|---|---|---|---|", *lines, ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated benchmark names to run; the other rows come from saved files")
    ap.add_argument("--reuse", action="store_true", help="run nothing; build the table from the saved files")
    ap.add_argument("--model", type=Path, default=ROOT / "runs/demo/sft/model",
                    help="HF model folder gateway_overhead serves")
    ap.add_argument("--results", type=Path, default=None,
                    help="folder of the JSON results and history.jsonl (default bench/results; runs/bench-quick "
                         "with --quick)")
    ap.add_argument("--out", type=Path, default=None, help="default bench/RESULTS.md (runs/bench-quick/ with --quick)")
    ap.add_argument("--quick", action="store_true", help="smallest sizes: checks that every row runs, not its speed")
    args = ap.parse_args()
    quick_dir = ROOT / "runs" / "bench-quick"  # quick figures never overwrite the record
    args.results = args.results or (quick_dir if args.quick else ROOT / "bench/results")
    args.out = args.out or (quick_dir / "RESULTS.md" if args.quick else ROOT / "bench/RESULTS.md")

    machine = this_machine()
    benches = benchmarks(args.model, torch.cuda.is_available())
    names = [b.name for b in benches]
    selected = set(names) if args.only is None else set(args.only.split(","))
    if unknown := selected - set(names):
        ap.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: {', '.join(names)}")
    if args.reuse:
        selected = set()
    args.results.mkdir(parents=True, exist_ok=True)
    invocation = shlex.join([rel(sys.executable), *sys.argv])

    table, commands, failed, measured = [], [], False, []
    run_stamp = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(),
                 "machine": machine, "quick": args.quick}
    for b in benches:
        path = args.results / f"{b.name}.json"
        sizes = QUICK.get(b.name, ()) if args.quick else ()
        cmd = [sys.executable, *b.argv, *sizes, "--out", rel(path)] if b.argv else []
        shown = f"`{shlex.join(['python', *cmd[1:]])}`" if cmd else "none: nothing under bench/ runs vLLM on a GPU"
        commands.append(f"- `{b.name}`: {shown}")
        data, reason, where, when = outcome(b, cmd, path, b.name in selected, machine)
        failed |= reason is not None and reason.startswith("failed")
        figures = None
        if data is not None and b.figures is not None:
            try:
                figures = b.figures(data)
            except (KeyError, TypeError, ValueError) as e:
                reason = f"unreadable result file ({type(e).__name__}: {e})"
        for i, (label, goal) in enumerate(b.rows):
            if figures:
                ours, peer_fig, ratio, met = figures[i]
                cells = [label, b.peer, ours, peer_fig, ratio, goal, "yes" if met else "no", where, when]
                if when.startswith("this run"):
                    measured.append({**run_stamp, "benchmark": label, "ours": ours, "peer": peer_fig,
                                     "ratio": float(ratio.rstrip("×")), "met": met})
            else:
                cells = [label, b.peer, reason or "no result yet", "—", "—", goal, "—", where, when]
            table.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")

    history = args.results / "history.jsonl"
    append_history(history, measured)
    header = ["benchmark", "peer", "ours", "peer's figure", "ratio", "goal", "met?", "machine", "when"]
    text = "\n".join([
        "# Benchmark results", "",
        f"Machine: {machine}.", "",
        f"Written by `{invocation}` on {stamp(time.time())}.", "",
        "Every figure is gptnl against a peer measured in the same run on the same machine; the ratio is the",
        "figure to compare. Rows whose \"when\" says \"saved file\" come from an earlier run's JSON in",
        f"`{rel(args.results)}/`, measured on the machine their row names.", "",
        *(["**Quick run** (`--quick`, the smallest sizes): these figures check that every row runs, not its "
           "speed.", ""] if args.quick else []),
        "The peers need the `bench` extra: `pip install -c constraints.txt -e '.[bench]'`.", "",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *table, "",
        *history_table(read_history(history), [label for b in benches for label, _ in b.rows]),
        "Commands (from the repository root, with the same Python; each writes its JSON):", "", *commands, "",
    ])
    atomic_write_text(args.out, text)
    print(f"\nwrote {rel(args.out)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
