"""Training metrics: `metrics.jsonl` (the record), TensorBoard (to watch), a loss-curve PNG (to show).

Only rank 0 writes. On resume, records past the checkpoint's step are dropped, so the file tells
the story of the steps whose weights survive, once each.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gptnl.fileio import atomic_write_text, read_jsonl

# Dense bf16 peak TFLOP/s per GPU, from the vendors' data sheets (without sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}


def peak_tflops(configured: float | None, device: torch.device) -> float | None:
    if configured is not None:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_TFLOPS.items():
            if key in name:
                return value
    return None


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after `step` (they belong to weights a crash threw away)."""
        if not self.enabled or not self.path.is_file():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return read_jsonl(path)


def plot_loss(run_dir: Path) -> Path | None:
    """Write `loss.png` (training and validation loss against step, and each mixture source's validation
    loss); None when there is nothing to plot."""
    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(*zip(*train, strict=False), label="train", linewidth=1.2)
    if val:
        ax.plot(*zip(*val, strict=False), "o-", label="validation", linewidth=1.2, markersize=3)
    sources = sorted({k.split("/", 1)[1] for r in records for k in r if k.startswith("val_loss/")})
    for name in sources:  # a mixture: each source's validation loss
        points = [(r["step"], r[f"val_loss/{name}"]) for r in records if f"val_loss/{name}" in r]
        ax.plot(*zip(*points, strict=False), ".--", label=f"validation: {name}", linewidth=0.9, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    run = Path(run_dir).resolve()
    ax.set_title(f"{run.parent.name}/{run.name}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / "loss.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out
