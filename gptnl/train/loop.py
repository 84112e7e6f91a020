"""The training loop: DeepSpeed engine, packed data in a resumable order, validation, metrics,
checkpoints on a schedule and on preemption signals, automatic resume from the newest intact one."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gptnl.artefacts import RunInputs, RunManifest, RunOutputs, write_manifest
from gptnl.config import ModelConfig, TrainConfig
from gptnl.errors import CheckpointError, ConfigError, GptnlError
from gptnl.fileio import atomic_write_json
from gptnl.model import Llama, document_ids
from gptnl.run_record import same_run_or_refuse
from gptnl.tokenizer_extend import VocabExtension
from gptnl.train import evals as in_training
from gptnl.train import init as initial
from gptnl.train.data import Shards, micro_batch_positions, validation_indices
from gptnl.train.engine import build
from gptnl.train.mixture import Stream, open_stream
from gptnl.trainer import checkpoint as ckpt
from gptnl.trainer import distributed as dist_env
from gptnl.trainer.loss import lm_loss, loss_function
from gptnl.trainer.metrics import MetricsLog, peak_tflops, plot_loss
from gptnl.trainer.optim import resolve_precision
from gptnl.trainer.preemption import EXIT_PREEMPTED, PreemptionFlag, note_checkpointed
from gptnl.trainer.steps import Cadence, run_steps

RUN_CONFIG = "train_config.json"


def _record_run_config(run_dir: Path, cfg: TrainConfig, stream: Stream) -> dict:
    """Write the resolved config on the first start; on a restart, refuse a different model, data,
    base or mixture (a mixture change only with `data.mixture.allow_change`, and then recorded)."""
    manifest = stream.first.manifest
    run_cfg = {
        "train": json.loads(cfg.model_dump_json()),
        "shards": stream.paths[stream.names[0]] if stream.names else stream.paths[""],
        **({"mixture": stream.paths} if stream.names else {}),
        "tokenizer": manifest.consumed.tokenizer.model_dump(),
        "seq_len": manifest.produced.seq_len,
    }
    path = run_dir / RUN_CONFIG
    if not path.is_file():  # the base's fingerprint reads its weights: once, on the first start
        run_cfg["base_model"] = initial.lineage(cfg)
    fresh = "a fresh initialisation"
    old = same_run_or_refuse(path, run_cfg, [
        lambda old: None if old["train"].get("init_from") == run_cfg["train"]["init_from"] else
        f"{run_dir} continues from {old['train'].get('init_from') or fresh}, not "
        f"{run_cfg['train']['init_from'] or fresh}; use a new --run-dir",
        # validated: a model field added since the run started takes its default
        lambda old: None if ModelConfig.model_validate(old["train"]["model"]) == cfg.model else
        f"{run_dir} holds a run of a different model; use a new --run-dir",
        lambda old: None if old["tokenizer"]["checksum"] == run_cfg["tokenizer"]["checksum"] else
        f"{run_dir} was trained on shards of another tokenizer; use a new --run-dir",
    ])
    if old is None:
        return run_cfg
    run_cfg["base_model"] = old.get("base_model")
    run_cfg["mixture_changes"] = old.get("mixture_changes", [])
    before, now = (_mixture_of(c["train"]) for c in (old, run_cfg))
    if before != now:
        if not (cfg.data.mixture and cfg.data.mixture.allow_change):
            raise ConfigError(f"{run_dir} was started with another data mixture ({before}); set "
                              "data.mixture.allow_change: true to change it on resume (the change is recorded)")
        run_cfg["mixture_changes"].append({"from": before, "to": now, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime())})
    atomic_write_json(path, run_cfg)
    return run_cfg


def _mixture_of(train_cfg: dict) -> dict | None:
    mixture = dict(train_cfg.get("data", {}).get("mixture") or {}) or None
    if mixture:
        mixture.pop("allow_change", None)
    return mixture


def find_shards(given: Path | None, cfg: TrainConfig, run_dir: Path) -> Path | None:
    """--shards, else data.shards, else the `shards` folder beside the run dir (runs/x/{shards,train});
    None for a mixture, whose sources name their own."""
    if given is not None:
        if cfg.data.mixture is not None:
            raise ConfigError("--shards: this config trains on a mixture (data.mixture); its sources name the shards")
        return Path(given)
    if cfg.data.mixture is not None:
        return None
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
    eos_id = val.manifest.produced.eos_id
    with torch.no_grad():
        for idx in validation_indices(len(val), cfg.eval.batches, cfg.batch.micro_batch_size, rank, world):
            x = val.batch(idx).to(device)
            loss_sum += lm_loss(forward(engine, x, cfg, eos_id), x).item() * len(idx)
            count += len(idx)
    engine.train()
    total, n = dist_env.all_sum([loss_sum, count], device)
    return total / n


def validation_record(engine, stream: Stream, cfg: TrainConfig, step: int, rank: int, world: int, device) -> dict:
    """val_loss (and val_ppl); for a mixture also each source's, with val_loss their weighted mean."""
    losses = {name: _validate(engine, val, cfg, rank, world, device) for name, val in stream.validation if len(val)}
    if not losses:
        return {}
    if stream.names:
        weights = dict(zip(stream.names, stream.weights, strict=True))
        total = sum(weights[n] for n in losses)
        overall = (sum(weights[n] * v for n, v in losses.items()) / total if total
                   else sum(losses.values()) / len(losses))
        return {"step": step, "val_loss": overall, "val_ppl": math.exp(overall),
                **{f"val_loss/{n}": v for n, v in losses.items()}}
    (overall,) = losses.values()
    return {"step": step, "val_loss": overall, "val_ppl": math.exp(overall)}


@dataclass
class Run:
    """What the step loop needs besides the engine: set up once, before the first step."""

    cfg: TrainConfig
    run_dir: Path
    stream: Stream
    model_cfg: ModelConfig
    rank: int
    world: int
    device: torch.device
    global_batch: int
    n_params: int
    flops_per_step: float
    eos_id: int
    tasks: list = field(default_factory=list)  # eval.tasks, loaded before the first step
    extension: VocabExtension | None = None  # the shards' tokenizer extends the base's


def _resume(engine, run: Run, universal: bool, console: Console) -> tuple[int, int]:
    """(step, position) of the newest intact checkpoint, loaded into the engine; (0, 0) when none."""
    found = ckpt.newest_complete(run.run_dir) if run.rank == 0 else None
    found = dist_env.broadcast_object(found)
    if found is None:
        return 0, 0
    if not universal:
        ckpt.check_compatible(found, run.world, run.cfg.zero_stage)
    tag = found.tag + "_universal" if universal else found.tag
    if universal and not (run.run_dir / tag).is_dir():
        raise CheckpointError(f"--universal: {run.run_dir / tag} not found; convert the checkpoint first")
    _, client = engine.load_checkpoint(str(run.run_dir), tag=tag)
    if client is None:
        raise CheckpointError(f"{run.run_dir / tag}: DeepSpeed could not load this checkpoint")
    if run.rank == 0:
        console.print(f"resumed from {run.run_dir / tag} at step {found.meta['step']}")
        if found.meta.get("global_batch") != run.global_batch:
            console.print(f"[yellow]warning: the global batch changes from {found.meta.get('global_batch')} "
                          f"sequences to {run.global_batch}; the data order continues from the saved position")
        if found.meta.get("seed") != run.cfg.data.seed:
            console.print(f"[yellow]warning: data.seed changes from {found.meta.get('seed')} to "
                          f"{run.cfg.data.seed}; sequences from here on follow the new order")
    return found.meta["step"], found.meta["position"]


def _save(engine, run: Run, step: int, position: int) -> None:
    tag = ckpt.tag_for(step)
    meta = {"step": step, "position": position, "world_size": run.world, "zero_stage": run.cfg.zero_stage,
            "global_batch": run.global_batch, "seed": run.cfg.data.seed}
    engine.save_checkpoint(str(run.run_dir), tag=tag, client_state=meta, save_latest=False)
    torch.distributed.barrier()
    if run.rank == 0:
        ckpt.write_marker(run.run_dir, tag, meta, run.cfg.checkpoint.integrity)
        ckpt.set_latest(run.run_dir, tag)
        ckpt.prune(run.run_dir, run.cfg.checkpoint.keep_last)
    torch.distributed.barrier()


def _setup(cfg: TrainConfig, run_dir: Path, shards: Path | None, console: Console) -> Run:
    rank, world, device = dist_env.init()
    global_batch = cfg.batch.global_batch(world)
    stream = open_stream(cfg, find_shards(shards, cfg, run_dir), global_batch)
    seq_len = stream.first.seq_len
    extension = initial.check_tokenizer(cfg, stream.first.manifest.consumed.tokenizer.model_dump())
    model_cfg = initial.model_config(cfg, stream.first.vocab_size, extension)
    if seq_len > model_cfg.max_seq_len:
        raise ConfigError(f"shards have seq_len {seq_len}, above the model's max_seq_len {model_cfg.max_seq_len}")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        _record_run_config(run_dir, cfg.model_copy(update={"model": model_cfg}), stream)
    torch.distributed.barrier()
    tasks = in_training.load_tasks(cfg.eval.tasks) if cfg.eval.tasks else []  # a bad name fails here, not at step N
    return Run(cfg, run_dir, stream, model_cfg, rank, world, device, global_batch, 0, 0.0,
               stream.first.manifest.produced.eos_id, tasks, extension)


def _model(run: Run) -> Llama:
    torch.manual_seed(run.cfg.data.seed)
    model = Llama(run.model_cfg)
    if run.cfg.init_from is not None:
        initial.load_base(model, run.cfg, run.extension)  # a resumed run then loads its checkpoint over it
    model = model.to(run.device)
    model.checkpoint_activations = run.cfg.activation_checkpointing
    if run.cfg.compile:  # in place: parameter names, and so checkpoints and exports, stay the same
        model.compile(mode=run.cfg.compile_mode)
    # counted before ZeRO-3 partitions the parameters (then each rank holds only a shard)
    run.n_params = model.num_params()
    run.flops_per_step = model.flops_per_token(run.stream.first.seq_len) * run.global_batch * run.stream.first.seq_len
    return model


def train(cfg: TrainConfig, run_dir: Path, *, shards: Path | None = None, universal: bool = False,
          show_progress: bool = True) -> int:
    """Train until `max_steps` (0), or until a preemption signal (EXIT_PREEMPTED). Resumes automatically."""
    deepspeed = dist_env.import_deepspeed()
    run_dir = Path(run_dir)
    console = Console(highlight=False, soft_wrap=True)
    engine, clean = None, False
    flag = PreemptionFlag().install()
    try:
        run = _setup(cfg, run_dir, shards, console)
        model = _model(run)
        precision = resolve_precision(cfg.precision)
        engine, scheduler = build(deepspeed, model, cfg, precision, load_universal=universal)
        step, position = _resume(engine, run, universal, console)
        metrics = MetricsLog(run_dir, enabled=run.rank == 0, tensorboard=cfg.metrics.tensorboard)
        metrics.truncate_after(step)
        if run.rank == 0:
            console.print(
                f"model {run.model_cfg.name}: {run.n_params / 1e6:.2f}M parameters, {run.world} process(es), "
                f"ZeRO-{cfg.zero_stage}, {precision}, {run.global_batch}×{run.stream.first.seq_len} tokens per step, "
                f"{len(run.stream)} training sequences"
                + (f" from {', '.join(run.stream.names)}" if run.stream.names else ""))
        loop = StepLoop(run, engine, scheduler, metrics, flag, console, show_progress)
        step, position, preempted = loop.until_done(step, position)
        metrics.close()
        if preempted:
            clean = True
            return EXIT_PREEMPTED
        if run.rank == 0:
            _finish(run, step, position, console)
        clean = True
        return 0
    finally:
        flag.restore()
        dist_env.shutdown(engine, barrier=clean)


def _finish(run: Run, step: int, position: int, console: Console) -> None:
    plot_loss(run.run_dir)
    recorded = shards_of_run(run.run_dir)
    write_manifest(run.run_dir, RunManifest(
        consumed=RunInputs(shards=recorded["shards"], mixture=recorded.get("mixture"),
                           tokenizer=run.stream.first.manifest.consumed.tokenizer,
                           base_model=recorded.get("base_model")),
        produced=RunOutputs(step=step, checkpoint=ckpt.tag_for(step), tokens_seen=position * run.stream.first.seq_len,
                            parameters=run.n_params, **run.stream.seen(position)),  # folded per source
        config=json.loads(run.cfg.model_copy(update={"model": run.model_cfg}).model_dump_json())))
    console.print(f"done: step {step}, checkpoint {run.run_dir / ckpt.tag_for(step)}")


class StepLoop:
    """Pre-training's regime for the shared step schedule (`gptnl.trainer.steps`): micro-batches with
    accumulation through the DeepSpeed engine, metrics with throughput and MFU, validation per source
    and `eval.tasks`, checkpoints that record the stream position."""

    def __init__(self, run: Run, engine, scheduler, metrics: MetricsLog, flag: PreemptionFlag, console: Console,
                 show_progress: bool):
        self.run, self.engine, self.scheduler, self.metrics, self.flag = run, engine, scheduler, metrics, flag
        self.console, self.show_progress = console, show_progress
        self.loss_fn = loss_function(run.cfg.compile, run.cfg.compile_mode)
        self.peak = peak_tflops(run.cfg.metrics.peak_tflops, run.device)
        self.plain = run.rank == 0 and not (show_progress and console.is_terminal)  # job logs get plain lines
        self.scorer = None
        self.position, self.loss, self.lr = 0, math.nan, 0.0
        self.t0, self.window = time.perf_counter(), 0  # the throughput window: steps since the last line
        self.progress = self.bar = None

    def micro_steps(self, position: int) -> float:
        """One optimizer step over the global batch at `position`; this rank's mean micro-batch loss."""
        run, cfg = self.run, self.run.cfg
        loss_sum, accum = 0.0, cfg.batch.accumulation(run.world)
        for micro in range(accum):
            positions = micro_batch_positions(position, micro, run.rank, run.world, cfg.batch.micro_batch_size)
            x = run.stream.batch(positions).to(run.device)
            loss = self.loss_fn(forward(self.engine, x, cfg, run.eos_id), x)
            self.engine.backward(loss)
            self.engine.step()
            loss_sum += loss.item()
        return loss_sum / accum

    def step(self, index: int) -> None:
        self.lr = self.scheduler.get_last_lr()[0]  # the lr this step uses; the engine advances it
        self.loss = self.micro_steps(self.position)
        self.position, self.window = self.position + self.run.global_batch, self.window + 1

    def log(self, step: int, preempted: bool) -> None:
        run, dt = self.run, time.perf_counter() - self.t0
        seq_len = run.stream.first.seq_len
        (loss_mean,) = dist_env.all_mean([self.loss], run.device)
        tflops = run.flops_per_step * self.window / dt / run.world / 1e12
        grad_norm = self.engine.get_global_grad_norm()
        record = {
            "step": step, "loss": loss_mean, "lr": self.lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "tokens_per_s": run.global_batch * seq_len * self.window / dt,
            "tflops_per_device": tflops, "mfu": tflops / self.peak if self.peak else None,
            "tokens_seen": self.position * seq_len, **run.stream.seen(self.position),
        }
        self.metrics.log(record)
        info = f"loss {loss_mean:.4f}  {record['tokens_per_s']:,.0f} tok/s"
        if self.plain:
            self.console.print(f"step {step}/{run.cfg.max_steps}  {info}  lr {self.lr:.2e}"
                               + (f"  MFU {record['mfu']:.1%}" if record["mfu"] else ""))
        self.progress.update(self.bar, info=info)
        self.t0, self.window = time.perf_counter(), 0

    def validate(self, step: int) -> None:
        """Validation loss (per source for a mixture) and the `eval.tasks` scores, in one record."""
        run, cfg = self.run, self.run.cfg
        record = validation_record(self.engine, run.stream, cfg, step, run.rank, run.world, run.device)
        if run.tasks:
            if self.scorer is None:
                manifest = run.stream.first.manifest
                self.scorer = in_training.LocalScorer(self.engine, in_training.tokenizer_of(manifest), run.eos_id,
                                                      run.stream.first.seq_len, run.device,
                                                      bos_ids=manifest.produced.bos_ids)
            self.engine.eval()
            record = {"step": step, **record,
                      **in_training.task_metrics(run.tasks, self.scorer, cfg.eval.task_limit, cfg.data.seed)}
            self.engine.train()
        self.t0 = time.perf_counter()
        if not record:
            return
        self.metrics.log(record)
        if self.plain:
            shown = [f"validation loss {record['val_loss']:.4f}"] if "val_loss" in record else []
            shown += [f"{k.removeprefix('eval/')} {v:.3f}" for k, v in record.items() if k.startswith("eval/")]
            self.console.print(f"step {step}/{cfg.max_steps}  {'  '.join(shown)}")

    def save(self, step: int) -> None:
        _save(self.engine, self.run, step, self.position)
        self.t0 = time.perf_counter()

    def advance(self, step: int) -> None:
        self.progress.update(self.bar, completed=step)

    def any_rank(self, flag: bool) -> bool:
        return dist_env.any_rank(flag, self.run.device)

    def stopped(self, step: int, signal: int | None) -> None:
        if self.run.rank == 0:
            note_checkpointed(self.run.run_dir)
            self.console.print(f"signal {signal} received: checkpoint {ckpt.tag_for(step)} "
                               f"written, exiting with code {EXIT_PREEMPTED} so the job can be requeued")
        torch.distributed.barrier()  # no rank leaves before the job script can see the note

    def until_done(self, step: int, position: int) -> tuple[int, int, bool]:
        run, cfg = self.run, self.run.cfg
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
            disable=run.rank != 0 or not self.show_progress,
        )
        cadence = Cadence(cfg.max_steps, cfg.metrics.log_every, cfg.eval.every, cfg.checkpoint.every)
        with self.progress:
            self.bar = self.progress.add_task("train", total=cfg.max_steps, completed=step, info="")
            self.position, self.t0, self.window = position, time.perf_counter(), 0
            step, preempted = run_steps(self, step, cadence, self.flag)
        return step, self.position, preempted


def shards_of_run(run_dir: Path) -> dict:
    """The resolved run config a training run recorded (used by export)."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise GptnlError(f"{run_dir}: not a training run dir (no {RUN_CONFIG})")
    return json.loads(path.read_text())

