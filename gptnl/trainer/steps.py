"""The step schedule both training regimes run, written once.

Optimizer steps follow each other until `max_steps`. After each one the ranks agree on whether a
preemption signal arrived (any rank's signal stops them all), then, in this order: a metrics line
(every `metrics.log_every` steps, at the last step, and on a signal), validation (every
`eval.every` steps, and at the last when the regime validates there), a checkpoint (every
`checkpoint.every` steps, on a signal, and at the last when the regime keeps one there), and on a
signal the note for the job script and exit code 75. What a step, a metrics line, a validation and
a checkpoint are is the regime's (`Regime`); when they happen is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gptnl.trainer.preemption import PreemptionFlag


class Regime(Protocol):
    """What pre-training and fine-tuning each supply. Steps are counted as done (1-based)."""

    def step(self, index: int) -> None:
        """Take optimizer step `index` (0-based): its micro-batches, accumulation and update."""

    def log(self, step: int, preempted: bool) -> None:
        """Write the metrics line of `step`."""

    def validate(self, step: int) -> None:
        """Held-out loss (and the regime's other in-loop scores) at `step`."""

    def save(self, step: int) -> None:
        """A complete checkpoint of `step`, on every rank."""

    def advance(self, step: int) -> None:
        """`step` is done: move the progress bar."""

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any."""

    def stopped(self, step: int, signal: int | None) -> None:
        """After the checkpoint of a signal: leave the note for the job script, say so, wait for the ranks."""


@dataclass(frozen=True)
class Cadence:
    """When the regime's parts run; 0 for `eval_every` or `checkpoint_every` turns the interval off."""

    max_steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    validate_last: bool = True  # validation at `max_steps` too (fine-tuning does its own after the loop)
    save_last: bool = True  # a checkpoint at `max_steps` too (fine-tuning exports the model instead)

    def logs(self, step: int, preempted: bool) -> bool:
        return step % self.log_every == 0 or step == self.max_steps or preempted

    def validates(self, step: int) -> bool:
        if not self.eval_every:
            return False
        return step % self.eval_every == 0 if step < self.max_steps else self.validate_last

    def saves(self, step: int, preempted: bool) -> bool:
        if preempted:
            return True
        if step == self.max_steps:
            return self.save_last
        return bool(self.checkpoint_every) and step % self.checkpoint_every == 0


def run_steps(regime: Regime, start: int, cadence: Cadence, flag: PreemptionFlag) -> tuple[int, bool]:
    """Steps from `start` (done so far) to `cadence.max_steps`; (the last step done, whether a signal
    stopped the run there, with its checkpoint written)."""
    step = start
    while step < cadence.max_steps:
        regime.step(step)
        step += 1
        preempted = regime.any_rank(flag.raised)
        if cadence.logs(step, preempted):
            regime.log(step, preempted)
        if cadence.validates(step):
            regime.validate(step)
        if cadence.saves(step, preempted):
            regime.save(step)
        regime.advance(step)
        if preempted:
            regime.stopped(step, flag.signal)
            return step, True
    return step, False
