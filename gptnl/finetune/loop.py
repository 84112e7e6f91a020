"""Supervised fine-tuning of a local HF causal LM on chat data, under accelerate.

The loss of a step is the summed NLL of every assistant token in the global batch divided by their
number, whatever the number of processes or micro-batches: each micro-batch's sum is scaled by
accum x world / tokens-in-step, which accelerate (1/accum) and DDP or DeepSpeed (1/world) undo.
The step schedule (when a step logs, validates, saves a checkpoint or stops on a signal), the
checkpoints and preemption are the trainer core's, shared with pre-training.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gptnl.config import FinetuneConfig
from gptnl.errors import CheckpointError, GptnlError
from gptnl.fileio import atomic_write_json, write_jsonl
from gptnl.finetune import batches as B
from gptnl.finetune.conversations import prepare
from gptnl.finetune.export import export
from gptnl.finetune.launch import make_accelerator
from gptnl.finetune.model import TargetLogits, load_base, wrap_lora
from gptnl.finetune.render import ChatRenderer
from gptnl.run_record import differs_in, same_run_or_refuse
from gptnl.trainer import checkpoint as ckpt
from gptnl.trainer.distributed import fill_single_process_env
from gptnl.trainer.loss import next_token_targets
from gptnl.trainer.metrics import MetricsLog
from gptnl.trainer.optim import WarmupCosine, adamw, resolve_precision
from gptnl.trainer.preemption import EXIT_PREEMPTED, PreemptionFlag, note_checkpointed
from gptnl.trainer.steps import Cadence, run_steps


def _record_config(out: Path, cfg: FinetuneConfig, base: Path, data: Path) -> None:
    """A rerun into `out` resumes only the run it belongs to."""
    current = {"config": json.loads(cfg.model_dump_json()), "base": str(Path(base).resolve()),
               "data": str(Path(data).resolve())}
    same_run_or_refuse(out / "finetune_config.json", current, differs_in(
        current, f"{out} holds a fine-tuning run with another config, base or data; use a new --out, or delete it "
                 "to start over"))


def _nll(model, head: TargetLogits, batch: dict) -> tuple[torch.Tensor, int]:
    """The summed NLL of the assistant tokens of `batch`, and their number; logits are computed at
    those positions only."""
    keep, targets = next_token_targets(batch["labels"])
    with head.only(keep):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits.float(), targets, reduction="sum"), int(targets.numel())


def _sum(acc, values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=acc.device)
    return acc.reduce(t, reduction="sum").tolist() if acc.num_processes > 1 else t.tolist()


@torch.no_grad()
def evaluate(acc, model, head: TargetLogits, encoded: list, micro: int, pad_id: int) -> float | None:
    """Held-out loss per assistant token. Every rank runs the same number of forward passes
    (ZeRO-3 gathers parameters collectively); padding batches count zero."""
    if not encoded:
        return None
    model.eval()
    batches = [list(range(i, min(i + micro, len(encoded)))) for i in range(0, len(encoded), micro)]
    per_rank = -(-len(batches) // acc.num_processes)
    mine = batches[acc.process_index :: acc.num_processes]
    total = count = 0.0
    for k in range(per_rank):
        real = k < len(mine)
        batch = B.collate([encoded[i] for i in (mine[k] if real else batches[0])], pad_id)
        nll, n = _nll(model, head, {key: v.to(acc.device) for key, v in batch.items()})
        if real:
            total, count = total + nll.item(), count + n
    model.train()
    total, count = _sum(acc, [total, count])
    return total / count if count else None


def finetune(cfg: FinetuneConfig, base: Path, data: Path, out: Path, *, show_progress: bool = True,
             universal: bool = False) -> int:
    """Train; returns 0, or EXIT_PREEMPTED after a signal-triggered checkpoint. `universal`: resume
    from the newest checkpoint's universal conversion (written by another number of processes)."""
    out = Path(out)
    fill_single_process_env()  # ranks from torchrun, from Slurm inside an srun step, or a world of one
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accum, global_batch = cfg.batch.accumulation(world), cfg.batch.global_batch(world)
    bf16 = resolve_precision(cfg.precision) == "bf16"
    if universal and cfg.backend != "deepspeed":
        raise GptnlError(f"--universal: universal checkpoints are DeepSpeed's; this run's backend is {cfg.backend}")
    acc = make_accelerator(cfg, accum, bf16, load_universal=universal)
    main = acc.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _record_config(out, cfg, base, data)
    acc.wait_for_everyone()

    torch.manual_seed(cfg.seed)
    tokenizer, model, grew_vocab = load_base(base, torch.bfloat16 if bf16 else torch.float32)
    prepared, train_enc, val_enc = _data(cfg, data, tokenizer, out if main else None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    if cfg.method == "lora":
        model = wrap_lora(model, cfg.lora, grew_vocab)
    head = TargetLogits(model)
    optimizer = adamw(model, cfg.optim)
    model, optimizer = acc.prepare(model, optimizer)

    ckpt_dir = out / "checkpoints"
    metrics = MetricsLog(out, enabled=main, tensorboard=cfg.metrics.tensorboard)
    start = _resume(acc, ckpt_dir, world, cfg, universal)
    metrics.truncate_after(start)
    evals = json.loads((out / "eval.json").read_text()) if (out / "eval.json").is_file() else {}
    if start == 0:
        evals = {"val_loss_before": evaluate(acc, model, head, val_enc, cfg.batch.micro_batch_size, pad_id)}
        if main:
            atomic_write_json(out / "eval.json", evals)

    flag = PreemptionFlag().install()
    progress = _progress(show_progress and main, start, cfg.max_steps)
    regime = _SftSteps(acc, model, head, optimizer, cfg, train_enc, val_enc, pad_id, accum, global_batch, metrics,
                       progress, ckpt_dir, world, out)
    cadence = Cadence(cfg.max_steps, cfg.metrics.log_every, cfg.eval.every, cfg.checkpoint.every,
                      validate_last=False, save_last=False)  # the loss after and the export come below
    try:
        _, preempted = run_steps(regime, start, cadence, flag)
        if preempted:
            return EXIT_PREEMPTED
        evals["val_loss_after"] = evaluate(acc, model, head, val_enc, cfg.batch.micro_batch_size, pad_id)
        if main:
            atomic_write_json(out / "eval.json", evals)
        export(acc, model, tokenizer, cfg, base, out, prepared.counts(), evals)
        return 0
    finally:
        progress.close()
        flag.restore()
        metrics.close()


class _SftSteps:
    """Fine-tuning's regime for the shared step schedule (`gptnl.trainer.steps`): this process's
    micro-batches of the step's global batch, under accelerate."""

    def __init__(self, acc, model, head: TargetLogits, optimizer, cfg: FinetuneConfig, train_enc: list,
                 val_enc: list, pad_id: int, accum: int, global_batch: int, metrics: MetricsLog, progress: _progress,
                 ckpt_dir: Path, world: int, out: Path):
        self.acc, self.model, self.head, self.optimizer, self.cfg = acc, model, head, optimizer, cfg
        self.train_enc, self.val_enc, self.pad_id = train_enc, val_enc, pad_id
        self.lengths = [len(e.ids) for e in train_enc]
        self.accum, self.global_batch, self.metrics, self.progress = accum, global_batch, metrics, progress
        self.ckpt_dir, self.world, self.out = ckpt_dir, world, out
        self.schedule = WarmupCosine.of(cfg.optim, cfg.max_steps)
        self.record: dict = {}

    def step(self, index: int) -> None:
        acc, cfg = self.acc, self.cfg
        lr = cfg.optim.lr * self.schedule(index)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mine = B.micro_batches(index, self.lengths, self.global_batch, cfg.batch.micro_batch_size,
                               acc.process_index, acc.num_processes, cfg.seed)
        t0 = time.perf_counter()
        loss, tokens = _step(acc, self.model, self.head, self.optimizer, [[self.train_enc[i] for i in b] for b in mine],
                             self.pad_id, self.accum, cfg)
        self.record = {"step": index + 1, "loss": loss, "lr": lr, "processes": acc.num_processes,
                       "tokens": int(tokens), "tokens_per_s": tokens / (time.perf_counter() - t0),
                       "padding": B.padding_share(mine, self.lengths)}

    def log(self, step: int, preempted: bool) -> None:
        self.metrics.log(self.record)

    def validate(self, step: int) -> None:
        val = evaluate(self.acc, self.model, self.head, self.val_enc, self.cfg.batch.micro_batch_size, self.pad_id)
        self.metrics.log({"step": step, "val_loss": val})

    def save(self, step: int) -> None:
        _save(self.acc, self.ckpt_dir, step, self.world, self.cfg)

    def advance(self, step: int) -> None:
        self.progress.advance(self.record["loss"])

    def any_rank(self, flag: bool) -> bool:
        return _any(self.acc, flag)

    def stopped(self, step: int, signal: int | None) -> None:
        if self.acc.is_main_process:
            note_checkpointed(self.out)
        self.acc.wait_for_everyone()  # no rank leaves before the job script can see the note


def _data(cfg: FinetuneConfig, data: Path, tokenizer, out: Path | None):
    """The gated conversations, rendered; the main process writes their ledger and counts into `out`."""
    renderer = ChatRenderer(tokenizer)
    prepared = prepare(data, cfg.data, lambda c: renderer.length(c.messages, c.tools), cfg.seq_len)
    train_enc = [renderer.encode(c.messages, c.tools) for c in prepared.train]
    val_enc = [renderer.encode(c.messages, c.tools) for c in prepared.val]
    if out is not None:
        (out / "data").mkdir(exist_ok=True)
        write_jsonl(out / "data" / "ledger.jsonl", prepared.ledger)
        atomic_write_json(out / "data" / "report.json", prepared.counts())
    return prepared, train_enc, val_enc


def _resume(acc, ckpt_dir: Path, world: int, cfg: FinetuneConfig, universal: bool = False) -> int:
    """The step of the newest intact checkpoint, loaded; 0 when there is none."""
    latest = ckpt.newest_complete(ckpt_dir)
    if latest is None:
        if universal:
            raise CheckpointError(f"--universal: {ckpt_dir} holds no complete checkpoint to resume")
        return 0
    path = latest.path
    if universal:
        path = _universal_state(acc, latest.path)
    elif cfg.backend == "deepspeed":
        ckpt.check_compatible(latest, world, cfg.zero_stage, engine_dir=ENGINE_DIR)
    if acc.is_main_process:
        print(f"resuming from {path} at step {latest.step}", flush=True)
    try:
        acc.load_state(str(path))
    except Exception as exc:  # accelerate/DeepSpeed raise many types for a damaged or foreign state
        raise CheckpointError(f"{latest.path}: cannot be loaded ({type(exc).__name__}: {exc})") from None
    # accelerate restores its micro-batch counter, which says where an optimizer step falls; counted
    # with the saving run's accumulation, it would put this run's steps mid-batch when the number of
    # processes (so the accumulation) changed
    acc.step = latest.step * acc.gradient_accumulation_steps
    return latest.step


ENGINE_DIR = "pytorch_model"  # where accelerate's save_state puts the DeepSpeed engine's files


def _universal_state(acc, checkpoint: Path) -> Path:
    """`checkpoint`_universal, holding DeepSpeed's universal conversion of the engine's folder, made
    whole for accelerate's `load_state`: the checkpoint's own other files (random states, marker)
    are copied beside it the first time."""
    universal = checkpoint.with_name(checkpoint.name + "_universal")
    if not (universal / ENGINE_DIR).is_dir():
        raise CheckpointError(
            f"--universal: {universal / ENGINE_DIR} not found; convert the checkpoint first with "
            f"`python -m deepspeed.checkpoint.ds_to_universal --input_folder {checkpoint / ENGINE_DIR} "
            f"--output_folder {universal / ENGINE_DIR} --inject_missing_state`")
    if acc.is_main_process:
        for item in checkpoint.iterdir():
            if item.is_file() and not (universal / item.name).exists():
                shutil.copy2(item, universal / item.name)
    acc.wait_for_everyone()
    return universal


def _step(acc, model, head: TargetLogits, optimizer, batches: list[list], pad_id: int, accum: int,
          cfg: FinetuneConfig):
    """One optimizer step over this process's micro-batches; (loss per target token, tokens) over
    all processes. The loss is scaled by the global target count, so every token weighs the same."""
    (targets,) = _sum(acc, [sum(e.targets for b in batches for e in b)])
    loss_sum, tokens = 0.0, 0
    for b in batches:
        batch = {k: v.to(acc.device) for k, v in B.collate(b, pad_id).items()}
        tokens += int(batch["attention_mask"].sum())
        with acc.accumulate(model):
            nll, _ = _nll(model, head, batch)
            acc.backward(nll * (accum * acc.num_processes / targets))
            if cfg.backend != "deepspeed" and cfg.optim.grad_clip > 0 and acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad()
        loss_sum += nll.item()
    loss, tokens = _sum(acc, [loss_sum, tokens])
    return loss / targets, tokens


def _any(acc, flag: bool) -> bool:
    return _sum(acc, [1.0 if flag else 0.0])[0] > 0


def _save(acc, ckpt_dir: Path, step: int, world: int, cfg: FinetuneConfig) -> None:
    tag = ckpt.tag_for(step)
    acc.save_state(str(ckpt_dir / tag))
    acc.wait_for_everyone()
    if acc.is_main_process:
        ckpt.write_marker(ckpt_dir, tag, {"step": step, "world_size": world, "zero_stage": cfg.zero_stage,
                                          "backend": cfg.backend}, cfg.checkpoint.integrity)
        ckpt.set_latest(ckpt_dir, tag)
        ckpt.prune(ckpt_dir, cfg.checkpoint.keep_last)
    acc.wait_for_everyone()


class _progress:
    """A rich progress bar on the main process, nothing elsewhere."""

    def __init__(self, enabled: bool, start: int, total: int):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("finetune"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("finetune", total=total, completed=start, loss="-")

    def advance(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=f"{loss:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
