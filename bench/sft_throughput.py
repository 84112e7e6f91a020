"""Fine-tuning throughput: `gptnl finetune` vs TRL's `SFTTrainer`, same run, same everything.

Both start from the same randomly initialised tiny Llama (an HF folder with gptnl's tokenizer and
chat template), train on the same bundled Dutch conversations (those without tool use, which TRL's
`messages`-only dataset cannot carry) with the same sequence limit,
global batch, micro-batch, optimizer settings and number of steps, in one process on CPU, one
after the other. TRL trains with `assistant_only_loss=True` (its mask comes from the template's
`generation` markers); gptnl finds the assistant tokens from prefix renderings. The masks are
compared conversation by conversation before any timing. The figure is non-padding tokens per
second over the steps after the first two. Goal: ratio >= 2.0 with every mask the same.

    python bench/sft_throughput.py [--steps 12] [--global-batch 16] [--micro-batch 4] [--seq-len 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data_pipeline" / "instructions"

TRL_SCRIPT = r'''
import json, sys, time
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

base, data, out, seq_len, micro, accum, steps, lr, warmup, seed = sys.argv[1:11]
torch.manual_seed(int(seed))
convs = [json.loads(line) for line in open(data, encoding="utf-8")]
tok = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)

class Clock(TrainerCallback):
    def __init__(self):
        self.marks = []
    def on_step_end(self, args, state, control, **kw):
        self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

clock = Clock()
args = SFTConfig(output_dir=out, max_length=int(seq_len), per_device_train_batch_size=int(micro),
                 gradient_accumulation_steps=int(accum), max_steps=int(steps), learning_rate=float(lr),
                 warmup_steps=int(warmup), lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0,
                 adam_beta1=0.9, adam_beta2=0.95, use_cpu=True, assistant_only_loss=True, packing=False,
                 report_to=[], logging_steps=1, save_strategy="no", seed=int(seed), dataloader_num_workers=0,
                 include_num_input_tokens_seen="non_padding", bf16=False, fp16=False)
dataset = Dataset.from_list([{"messages": c["messages"]} for c in convs])
trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, callbacks=[clock])
# TRL folds the template's assistant mask into `labels` (-100 outside the assistant's tokens)
masks = [{"input_ids": list(r["input_ids"]),
          "assistant_masks": [int(x) for x in r["assistant_masks"]] if "assistant_masks" in r
          else [int(label != -100) for label in r["labels"]]} for r in trainer.train_dataset]
start = time.perf_counter()
trainer.train()
json.dump({"masks": masks, "marks": clock.marks, "wall": time.perf_counter() - start}, open(out + "/trl.json", "w"))
'''


def make_base(work: Path) -> Path:
    import torch

    from gptnl import tokenizer as tokenizer_mod
    from gptnl.config import load_model_config
    from gptnl.corpus import iter_documents
    from gptnl.hf import save_pretrained
    from gptnl.model import Llama

    tok_dir = work / "tokenizer"
    tok = tokenizer_mod.train((d.text for d in iter_documents(ROOT / "data_pipeline" / "sample")), 4000, tok_dir)
    cfg = load_model_config(ROOT / "configs" / "model" / "tiny.yaml")
    cfg = cfg.with_vocab(tok.vocab_size) if cfg.vocab_size is None else cfg
    cfg = cfg.model_copy(update={"max_seq_len": 2048})
    torch.manual_seed(0)
    return save_pretrained(Llama(cfg).state_dict(), cfg, tok_dir, work / "base")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--backend", default="ddp", choices=["ddp", "deepspeed"])
    ap.add_argument("--out", default=str(ROOT / "bench/results/sft_throughput.json"))
    args = ap.parse_args()
    lr, warmup, seed = 1e-3, 2, 7

    from transformers import AutoTokenizer

    from gptnl.config import SftData
    from gptnl.finetune.conversations import prepare
    from gptnl.finetune.render import ChatRenderer

    work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    base = make_base(work)
    tok = AutoTokenizer.from_pretrained(base)
    renderer = ChatRenderer(tok)
    prepared = prepare(DATA, SftData(licences=ROOT / "data_pipeline" / "licences.yaml", val_fraction=0.0,
                                     decontamination={"tasks": None}),
                       lambda c: renderer.length(c.messages), args.seq_len)
    # TRL's dataset gets `messages` only, so the tool-use conversations (tool definitions, tool calls
    # and results) are left out: both sides train on the conversations both render the same way
    convs = [c for c in prepared.train
             if not c.tools and all(m.get("role") != "tool" and not m.get("tool_calls") for m in c.messages)]
    left_out = len(prepared.train) - len(convs)
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps({"id": c.id, "messages": c.messages, "licence": c.licence,
                                        "source": c.source}, ensure_ascii=False) + "\n" for c in convs))
    env = {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "ACCELERATE_USE_CPU"):
        env.pop(key, None)

    # TRL first: its tokenised dataset gives the masks to compare.
    trl_out = work / "trl-run"  # not "trl": the script's folder is first on its sys.path
    trl_out.mkdir()
    script = work / "trl_run.py"
    script.write_text(TRL_SCRIPT)
    accum = args.global_batch // args.micro_batch
    subprocess.run([sys.executable, str(script), str(base), str(data), str(trl_out), str(args.seq_len),
                    str(args.micro_batch), str(accum), str(args.steps), str(lr), str(warmup), str(seed)],
                   env=env, check=True)
    trl = json.loads((trl_out / "trl.json").read_text())
    mismatched = 0
    for conv, theirs in zip(convs, trl["masks"], strict=True):
        enc = renderer.encode(conv.messages)
        if enc.ids != theirs["input_ids"] or enc.mask != [bool(m) for m in theirs["assistant_masks"]]:
            mismatched += 1
    marks = trl["marks"]
    (t0, n0), (t1, n1) = marks[2], marks[-1]
    trl_tps = (n1 - n0) / (t1 - t0)

    cfg = {"method": "full", "backend": args.backend, "zero_stage": 2, "seq_len": args.seq_len,
           "batch": {"global_batch_size": args.global_batch, "micro_batch_size": args.micro_batch},
           "optim": {"lr": lr, "min_lr": 0.0, "weight_decay": 0.0, "warmup_steps": warmup, "grad_clip": 1.0},
           "max_steps": args.steps, "seed": seed, "eval": {"every": 0}, "checkpoint": {"every": 0},
           "data": {"licences": str(ROOT / "data_pipeline" / "licences.yaml"), "val_fraction": 0.0,
                    "decontamination": {"tasks": None}}}
    (work / "sft.yaml").write_text(yaml.safe_dump(cfg))
    ours_out = work / "ours"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gptnl", "finetune", str(work / "sft.yaml"), "--base", str(base),
                    "--data", str(data), "--out", str(ours_out), "--no-progress"], env=env, check=True)
    ours_wall = time.perf_counter() - start
    steps = [json.loads(line) for line in (ours_out / "metrics.jsonl").read_text().splitlines()][2:]
    ours_tps = sum(s["tokens"] for s in steps) / sum(s["tokens"] / s["tokens_per_s"] for s in steps)

    result = {
        "machine": platform.platform(), "cpus": os.cpu_count(), "conversations": len(convs),
        "steps": args.steps, "global_batch": args.global_batch, "micro_batch": args.micro_batch,
        "seq_len": args.seq_len, "backend": args.backend,
        "masks_mismatched": mismatched,
        "tool_conversations_left_out": left_out, "gptnl_tokens_per_s": ours_tps, "trl_tokens_per_s": trl_tps,
        "ratio": ours_tps / trl_tps, "gptnl_padding_share": sum(s["padding"] for s in steps) / len(steps),
        "gptnl_wall_s": ours_wall, "trl_train_wall_s": trl["wall"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"loss masks: {len(convs) - mismatched}/{len(convs)} conversations identical to TRL's "
          f"({left_out} tool-use conversations left out)")
    print(f"gptnl finetune ({args.backend}): {ours_tps:,.0f} tokens/s   TRL SFTTrainer: {trl_tps:,.0f} tokens/s   "
          f"ratio {ours_tps / trl_tps:.2f} (goal >= 2.0)")
    print(f"gptnl padding share {result['gptnl_padding_share']:.1%}; results in {args.out}")


if __name__ == "__main__":
    main()
