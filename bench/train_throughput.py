"""Training throughput: gptnl's Llama vs Hugging Face `LlamaForCausalLM`, same run, same engine.

Both models get the same dimensions, the same DeepSpeed engine built by gptnl's trainer
(`gptnl.train.engine.build`: torch AdamW, ZeRO stage, precision, clipping), the same batch and
sequence length. Each computes its loss its own way: ours with the trainer's `lm_loss`, HF's
model with `labels=`, as a transformers user would train it. Steps alternate in blocks (ours,
theirs, ours, …) so that a noisy neighbour slows both alike; the figure is the median step time.
With `--compile` ours runs as `compile: true` trains (the model and the loss under torch.compile)
while the peer stays as transformers trains it by default (eager), and the same run also trains
ours eager and compiled for `--check-steps` steps from the same initial weights on the same batches
and records the largest relative difference of their losses (float rounding, or a real change).
`--compile-mode max-autotune-no-cudagraphs` is `compile_mode:` of that name (Inductor times its own
GEMM kernels against the BLAS library's). Goal: ratio ≥ 1.1.

    python bench/train_throughput.py [--model configs/model/tiny.yaml] [--seq-len 256] [--batch 8] [--compile]
        [--compile-mode max-autotune-no-cudagraphs]
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
from gptnl.model import Llama
from gptnl.train.engine import build
from gptnl.trainer import distributed as dist_env
from gptnl.trainer.loss import loss_function
from gptnl.trainer.optim import resolve_precision

ROOT = Path(__file__).resolve().parent.parent


def hf_model(cfg):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings, attn_implementation="sdpa", use_cache=False,
    )
    return LlamaForCausalLM(hf_cfg)


def our_model(cfg, compiled: bool, mode: str = "default") -> Llama:
    model = Llama(cfg)
    if compiled:
        model.compile(mode=mode)
    return model


def compile_check(deepspeed, mcfg, tcfg, precision, x, steps: int, mode: str = "default") -> float:
    """Train ours eager and compiled from the same weights on the same batches; the largest relative
    difference of the two loss sequences."""
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        engine, _ = build(deepspeed, our_model(mcfg, compiled, mode).to(x.device), tcfg, precision)
        loss_of, seen = loss_function(compiled, mode), []
        gen = torch.Generator().manual_seed(1)
        for _ in range(steps):
            batch = torch.randint(0, mcfg.vocab_size, x.shape, generator=gen).to(x.device)
            loss = loss_of(engine(batch), batch)
            engine.backward(loss)
            engine.step()
            seen.append(loss.item())
        losses[compiled] = seen
        engine.destroy()
    return max(abs(a - b) / abs(a) for a, b in zip(losses[False], losses[True], strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "configs/model/tiny.yaml"))
    ap.add_argument("--vocab", type=int, default=8000, help="vocab size where the model config leaves it open")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=4, help="alternating blocks per model")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per block")
    ap.add_argument("--compile", action="store_true", help="ours as `compile: true` trains; the peer eager")
    ap.add_argument("--check-steps", type=int, default=50, help="with --compile: steps of the loss check")
    ap.add_argument("--compile-mode", default="default", choices=("default", "max-autotune-no-cudagraphs"),
                    help="with --compile: as `compile_mode:` in a training config")
    ap.add_argument("--out", default=str(ROOT / "bench/results/train_throughput.json"))
    args = ap.parse_args()

    _, world, device = dist_env.init()
    deepspeed = dist_env.import_deepspeed()
    mcfg = load_model_config(args.model)
    mcfg = mcfg.with_vocab(args.vocab) if mcfg.vocab_size is None else mcfg
    tcfg = TrainConfig(model=mcfg, max_steps=10**6, zero_stage=args.zero_stage,
                       batch={"micro_batch_size": args.batch, "grad_accum_steps": 1},
                       optim={"warmup_steps": 0})
    precision = resolve_precision("auto")
    torch.manual_seed(0)
    x = torch.randint(0, mcfg.vocab_size, (args.batch, args.seq_len), device=device)

    ours_loss = loss_function(args.compile, args.compile_mode)
    check = compile_check(deepspeed, mcfg, tcfg, precision, x, args.check_steps, args.compile_mode) \
        if args.compile else None

    engines = {}
    for name, make, loss_of in (
        ("gptnl Llama", lambda: our_model(mcfg, args.compile, args.compile_mode), lambda e: ours_loss(e(x), x)),
        ("HF LlamaForCausalLM", lambda: hf_model(mcfg), lambda e: e(input_ids=x, labels=x).loss),
    ):
        torch.manual_seed(0)
        engine, _ = build(deepspeed, make().to(device), tcfg, precision)
        engines[name] = (engine, loss_of)

    def step(name):
        engine, loss_of = engines[name]
        loss = loss_of(engine)
        engine.backward(loss)
        engine.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = {name: [] for name in engines}
    for name in engines:  # warm-up: allocator, kernels, optimizer state
        for _ in range(3):
            step(name)
    for _ in range(args.blocks):
        for name in engines:
            for _ in range(args.steps):
                t = time.perf_counter()
                step(name)
                times[name].append(time.perf_counter() - t)

    tokens = args.batch * args.seq_len * world
    ours, theirs = (statistics.median(times[n]) for n in engines)
    flops = Llama(mcfg).flops_per_token(args.seq_len)
    result = {
        "benchmark": "train_throughput",
        "peer": "Hugging Face transformers LlamaForCausalLM (sdpa, its own loss), same DeepSpeed engine",
        "model": Path(args.model).stem, "seq_len": args.seq_len, "batch": args.batch, "zero_stage": args.zero_stage,
        "precision": precision,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "ours_tokens_per_s": tokens / ours, "peer_tokens_per_s": tokens / theirs,
        "ratio": theirs / ours, "goal": ">= 1.1", "compile": args.compile,
        **({"compile_mode": args.compile_mode} if args.compile else {}),
        **({"compile_check_steps": args.check_steps, "compile_max_rel_loss_diff": check} if check is not None else {}),
        "ours_tflops": flops * tokens / ours / 1e12,
        "torch": torch.__version__,
    }
    print(f"{'model':<22}{'tokens/s':>12}{'median step':>14}")
    for name in engines:
        med = statistics.median(times[name])
        print(f"{name:<22}{tokens / med:>12,.0f}{med * 1e3:>12.1f}ms")
    print(f"ratio gptnl / HF: {result['ratio']:.3f}x (goal >= 1.1)")
    if check is not None:
        print(f"compiled vs eager over {args.check_steps} steps: largest relative loss difference {check:.2e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for engine, _ in engines.values():
        engine.destroy()
    engines.clear()
    dist_env.shutdown()


if __name__ == "__main__":
    main()
