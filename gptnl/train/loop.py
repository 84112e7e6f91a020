"""The training loop: DeepSpeed engine, packed data in a resumable order, validation, metrics,
checkpoints on a schedule and on preemption signals, automatic resume from the newest intact one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gptnl.config import TrainConfig
from gptnl.errors import CheckpointError, ConfigError, GptnlError
from gptnl.fileio import atomic_write_json, write_manifest
from gptnl.model import Llama, document_ids
from gptnl.train import checkpoint as ckpt
from gptnl.train import distributed as dist_env
from gptnl.train import init as initial
from gptnl.train.data import SequenceOrder, Shards, micro_batch_positions, validation_indices
from gptnl.train.engine import build, resolve_precision
from gptnl.train.metrics import MetricsLog, peak_tflops, plot_loss
from gptnl.train.preemption import EXIT_PREEMPTED, PreemptionFlag

RUN_CONFIG = "train_config.json"


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy inside each packed sequence, in fp32. The labels are shifted, not
    the logits: slicing the (batch, seq, vocab) logits costs a full-size copy and zero-fill in backward."""
    labels = F.pad(tokens[:, 1:], (0, 1), value=-100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


def loss_function(compiled: bool):
    """`lm_loss`, or its torch.compile'd form: Inductor fuses the fp32 upcast, log-softmax and gather
    of the cross-entropy, which on a small model is a large share of a step."""
    return torch.compile(lm_loss) if compiled else lm_loss


def _record_run_config(run_dir: Path, cfg: TrainConfig, shards: Path, shards_manifest: dict) -> dict:
    """Write the resolved config on the first start; on a restart, refuse a different model or data."""
    run_cfg = {
        "train": json.loads(cfg.model_dump_json()),
        "shards": str(Path(shards).resolve()),
        "tokenizer": shards_manifest["consumed"]["tokenizer"],
        "seq_len": shards_manifest["produced"]["seq_len"],
    }
    path = run_dir / RUN_CONFIG
    if path.is_file():
        old = json.loads(path.read_text())
        if old["train"].get("init_from") != run_cfg["train"]["init_from"]:
            raise ConfigError(f"{run_dir} continues from {old['train'].get('init_from') or 'a fresh initialisation'}, "
                              f"not {run_cfg['train']['init_from'] or 'a fresh initialisation'}; use a new --run-dir")
        if old["train"]["model"] != run_cfg["train"]["model"]:
            raise ConfigError(f"{run_dir} holds a run of a different model; use a new --run-dir")
        if old["tokenizer"]["checksum"] != run_cfg["tokenizer"]["checksum"]:
            raise ConfigError(f"{run_dir} was trained on shards of another tokenizer; use a new --run-dir")
        run_cfg["base_model"] = old.get("base_model")
    else:
        run_cfg["base_model"] = initial.lineage(cfg)
    atomic_write_json(path, run_cfg)
    return run_cfg


def find_shards(given: Path | None, cfg: TrainConfig, run_dir: Path) -> Path:
    """--shards, else data.shards, else the `shards` folder beside the run dir (runs/x/{shards,train})."""
    if given is not None:
        return Path(given)
    if cfg.data.shards is not None:
        return cfg.data.shards
    sibling = Path(run_dir).resolve().parent / "shards"
    if (sibling / "manifest.json").is_file():
        return sibling
    raise ConfigError(f"no shards: pass --shards, set data.shards in the config, or pack into {sibling}")


def forward(engine, x: torch.Tensor, cfg: TrainConfig, eos_id: int) -> torch.Tensor:
    """Logits of a packed batch; with document masking, no token attends across an EOS."""
    return engine(x, document_ids(x, eos_id)) if cfg.document_masking else engine(x)


def _validate(engine, val: Shards, cfg: TrainConfig, rank: int, world: int, device) -> float:
    engine.eval()
    loss_sum = count = 0.0
    eos_id = val.manifest["produced"]["eos_id"]
    with torch.no_grad():
        for idx in validation_indices(len(val), cfg.eval.batches, cfg.batch.micro_batch_size, rank, world):
            x = val.batch(idx).to(device)
            loss_sum += lm_loss(forward(engine, x, cfg, eos_id), x).item() * len(idx)
            count += len(idx)
    engine.train()
    total, n = dist_env.all_sum([loss_sum, count], device)
    return total / n


def train(cfg: TrainConfig, run_dir: Path, *, shards: Path | None = None, universal: bool = False,
          show_progress: bool = True) -> int:
    """Train until `max_steps` (0), or until a preemption signal (EXIT_PREEMPTED). Resumes automatically."""
    rank, world, device = dist_env.init()
    deepspeed = dist_env.import_deepspeed()
    run_dir = Path(run_dir)
    console = Console(highlight=False, soft_wrap=True)
    engine = None
    clean = False
    flag = PreemptionFlag().install()
    try:
        shards = find_shards(shards, cfg, run_dir)
        train_data = Shards(shards, "train")
        val_data = Shards(shards, "validation")
        seq_len = train_data.seq_len
        model_cfg = initial.model_config(cfg, train_data.vocab_size)
        initial.check_tokenizer(cfg, train_data.manifest["consumed"]["tokenizer"])
        if seq_len > model_cfg.max_seq_len:
            raise ConfigError(f"shards have seq_len {seq_len}, above the model's max_seq_len {model_cfg.max_seq_len}")
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            _record_run_config(run_dir, cfg.model_copy(update={"model": model_cfg}), shards, train_data.manifest)
        torch.distributed.barrier()

        torch.manual_seed(cfg.data.seed)
        model = Llama(model_cfg)
        if cfg.init_from is not None:
            initial.load_base(model, cfg)  # a resumed run then loads its checkpoint over it
        model = model.to(device)
        model.checkpoint_activations = cfg.activation_checkpointing
        if cfg.compile:
            model.compile()  # in place: parameter names, and so checkpoints and exports, stay the same
        loss_fn = loss_function(cfg.compile)
        eos_id = train_data.manifest["produced"]["eos_id"]
        # counted before ZeRO-3 partitions the parameters (then each rank holds only a shard)
        n_params, flops_per_token = model.num_params(), model.flops_per_token(seq_len)
        mb, ga = cfg.batch.micro_batch_size, cfg.batch.grad_accum_steps
        global_batch = mb * ga * world
        precision = resolve_precision(cfg.precision)
        engine, scheduler = build(deepspeed, model, cfg, precision, load_universal=universal)

        step, position = 0, 0
        found = ckpt.newest_complete(run_dir) if rank == 0 else None
        found = dist_env.broadcast_object(found)
        if found is not None:
            if not universal:
                ckpt.check_compatible(found, world, cfg.zero_stage)
            tag = found.tag + "_universal" if universal else found.tag
            if universal and not (run_dir / tag).is_dir():
                raise CheckpointError(f"--universal: {run_dir / tag} not found; convert the checkpoint first")
            _, client = engine.load_checkpoint(str(run_dir), tag=tag)
            if client is None:
                raise CheckpointError(f"{run_dir / tag}: DeepSpeed could not load this checkpoint")
            step, position = found.meta["step"], found.meta["position"]
            if rank == 0:
                console.print(f"resumed from {run_dir / tag} at step {step}")
                if found.meta.get("global_batch") != global_batch:
                    console.print(f"[yellow]warning: the global batch changes from {found.meta.get('global_batch')} "
                                  f"sequences to {global_batch}; the data order continues from the saved position")
                if found.meta.get("seed") != cfg.data.seed:
                    console.print(f"[yellow]warning: data.seed changes from {found.meta.get('seed')} to "
                                  f"{cfg.data.seed}; sequences from here on follow the new order")

        metrics = MetricsLog(run_dir, enabled=rank == 0, tensorboard=cfg.metrics.tensorboard)
        metrics.truncate_after(step)
        order = SequenceOrder(len(train_data), cfg.data.seed)
        flops_per_step = flops_per_token * global_batch * seq_len
        peak = peak_tflops(cfg.metrics.peak_tflops, device)
        if rank == 0:
            console.print(
                f"model {model_cfg.name}: {n_params / 1e6:.2f}M parameters, {world} process(es), "
                f"ZeRO-{cfg.zero_stage}, {precision}, {global_batch}×{seq_len} tokens per step, "
                f"{len(train_data)} training sequences"
            )

        def save(step: int, position: int) -> None:
            tag = ckpt.tag_for(step)
            meta = {"step": step, "position": position, "world_size": world, "zero_stage": cfg.zero_stage,
                    "global_batch": global_batch, "seed": cfg.data.seed}
            engine.save_checkpoint(str(run_dir), tag=tag, client_state=meta, save_latest=False)
            torch.distributed.barrier()
            if rank == 0:
                ckpt.write_marker(run_dir, tag, meta, cfg.checkpoint.integrity)
                ckpt.set_latest(run_dir, tag)
                ckpt.prune(run_dir, cfg.checkpoint.keep_last)
            torch.distributed.barrier()

        progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
            disable=rank != 0 or not show_progress,
        )
        with progress:
            bar = progress.add_task("train", total=cfg.max_steps, completed=step, info="")
            t0, steps_in_window = time.perf_counter(), 0
            while step < cfg.max_steps:
                loss_sum, lr = 0.0, scheduler.get_last_lr()[0]  # the lr this step uses; the engine advances it
                for micro in range(ga):
                    idx = [order[p] for p in micro_batch_positions(position, micro, rank, world, mb)]
                    x = train_data.batch(idx).to(device)
                    loss = loss_fn(forward(engine, x, cfg, eos_id), x)
                    engine.backward(loss)
                    engine.step()
                    loss_sum += loss.item()
                step += 1
                position += global_batch
                steps_in_window += 1
                preempted = dist_env.any_rank(flag.raised, device)

                if step % cfg.metrics.log_every == 0 or step == cfg.max_steps or preempted:
                    (loss_mean,) = dist_env.all_mean([loss_sum / ga], device)
                    dt = time.perf_counter() - t0
                    tflops = flops_per_step * steps_in_window / dt / world / 1e12
                    grad_norm = engine.get_global_grad_norm()
                    record = {
                        "step": step, "loss": loss_mean, "lr": lr,
                        "grad_norm": float(grad_norm) if grad_norm is not None else None,
                        "tokens_per_s": global_batch * seq_len * steps_in_window / dt,
                        "tflops_per_device": tflops, "mfu": tflops / peak if peak else None,
                        "tokens_seen": position * seq_len,
                    }
                    metrics.log(record)
                    info = f"loss {loss_mean:.4f}  {record['tokens_per_s']:,.0f} tok/s"
                    progress.update(bar, info=info)
                    if rank == 0 and not (show_progress and console.is_terminal):  # job logs get plain lines
                        console.print(f"step {step}/{cfg.max_steps}  {info}  lr {lr:.2e}"
                                      + (f"  MFU {record['mfu']:.1%}" if record["mfu"] else ""))
                    t0, steps_in_window = time.perf_counter(), 0

                if val_data.num_sequences and cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.max_steps):
                    val_loss = _validate(engine, val_data, cfg, rank, world, device)
                    metrics.log({"step": step, "val_loss": val_loss, "val_ppl": float(torch.tensor(val_loss).exp())})
                    if rank == 0 and not (show_progress and console.is_terminal):
                        console.print(f"step {step}/{cfg.max_steps}  validation loss {val_loss:.4f}")
                    t0 = time.perf_counter()

                if preempted or step == cfg.max_steps or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
                    save(step, position)
                    t0 = time.perf_counter()
                progress.update(bar, completed=step)
                if preempted:
                    if rank == 0:
                        console.print(f"signal {flag.signal} received: checkpoint {ckpt.tag_for(step)} written, "
                                      f"exiting with code {EXIT_PREEMPTED} so the job can be requeued")
                    metrics.close()
                    clean = True
                    return EXIT_PREEMPTED
        metrics.close()
        if rank == 0:
            plot_loss(run_dir)
            write_manifest(
                run_dir, stage="train",
                consumed={"shards": str(Path(shards).resolve()),
                          "tokenizer": train_data.manifest["consumed"]["tokenizer"],
                          **({"base_model": base} if (base := shards_of_run(run_dir).get("base_model")) else {})},
                produced={"step": step, "checkpoint": ckpt.tag_for(step), "tokens_seen": position * seq_len,
                          "parameters": n_params},
                config=json.loads(cfg.model_copy(update={"model": model_cfg}).model_dump_json()),
            )
            console.print(f"done: step {step}, checkpoint {run_dir / ckpt.tag_for(step)}")
        clean = True
        return 0
    finally:
        flag.restore()
        dist_env.shutdown(engine, barrier=clean)


def shards_of_run(run_dir: Path) -> dict:
    """The resolved run config a training run recorded (used by export)."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise GptnlError(f"{run_dir}: not a training run dir (no {RUN_CONFIG})")
    return json.loads(path.read_text())

