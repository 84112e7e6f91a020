"""Cost of document masking: gptnl's Llama trained with and without `document_masking`, same run,
same DeepSpeed engine, same packed batches.

Batches are random tokens cut into documents of geometric length (mean `--doc-len`) ended by EOS,
as `gptnl pack` lays them out. Steps alternate in blocks so that a noisy neighbour slows both alike;
the figure is the median step time. On CUDA the mask is a FlexAttention block mask, elsewhere a
boolean SDPA mask (FlexAttention has no CPU backward). There is no goal: masking costs time, this
says how much.

    python bench/document_masking.py [--model configs/model/tiny.yaml] [--seq-len 256] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from gptnl.config import TrainConfig, load_model_config
from gptnl.model import Llama, document_ids
from gptnl.train.engine import build
from gptnl.trainer import distributed as dist_env
from gptnl.trainer.loss import lm_loss
from gptnl.trainer.optim import resolve_precision

ROOT = Path(__file__).resolve().parent.parent
EOS = 2


def packed_batch(batch: int, seq_len: int, vocab: int, doc_len: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, vocab, (batch, seq_len), generator=g)
    x[torch.rand(batch, seq_len, generator=g) < 1 / doc_len] = EOS
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "configs/model/tiny.yaml"))
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--doc-len", type=float, default=64, help="mean document length in tokens")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "bench/results/document_masking.json"))
    args = ap.parse_args()

    _, world, device = dist_env.init()
    deepspeed = dist_env.import_deepspeed()
    mcfg = load_model_config(args.model)
    mcfg = mcfg.with_vocab(args.vocab) if mcfg.vocab_size is None else mcfg
    tcfg = TrainConfig(model=mcfg, max_steps=10**6, batch={"micro_batch_size": args.batch, "grad_accum_steps": 1},
                       optim={"warmup_steps": 0})
    precision = resolve_precision("auto")
    x = packed_batch(args.batch, args.seq_len, mcfg.vocab_size, args.doc_len, 0).to(device)
    docs = document_ids(x, EOS)
    engines = {}
    for masked in (False, True):
        torch.manual_seed(0)
        engines[masked] = build(deepspeed, Llama(mcfg).to(device), tcfg, precision)[0]

    def step(masked: bool) -> None:
        engine = engines[masked]
        loss = lm_loss(engine(x, docs) if masked else engine(x), x)
        engine.backward(loss)
        engine.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = {m: [] for m in engines}
    for m in engines:
        for _ in range(2):
            step(m)
    for _ in range(args.blocks):
        for m in engines:
            for _ in range(args.steps):
                t = time.perf_counter()
                step(m)
                times[m].append(time.perf_counter() - t)
    plain, masked = statistics.median(times[False]), statistics.median(times[True])
    tokens = args.batch * args.seq_len * world
    result = {
        "benchmark": "document_masking", "peer": "the same model and engine without document masking",
        "model": Path(args.model).stem, "seq_len": args.seq_len, "batch": args.batch, "doc_len": args.doc_len,
        "documents_per_sequence": float((docs[:, -1] + 1).float().mean()),
        "mask": "FlexAttention block mask" if device.type == "cuda" else "boolean SDPA mask",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "ours_tokens_per_s": tokens / masked, "peer_tokens_per_s": tokens / plain, "ratio": plain / masked,
        "goal": "none (a cost)", "torch": torch.__version__,
    }
    print(f"masked {tokens / masked:,.0f} tokens/s, unmasked {tokens / plain:,.0f} tokens/s: "
          f"{result['ratio']:.3f}x ({result['mask']}, {result['documents_per_sequence']:.1f} documents a sequence)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for engine in engines.values():
        engine.destroy()
    dist_env.shutdown()


if __name__ == "__main__":
    main()
