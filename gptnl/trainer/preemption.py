"""Turn SIGTERM and SIGUSR1 (Slurm's warning before preemption or the time limit) into a flag.

The trainer checks the flag between steps, agrees on it across ranks, writes a checkpoint and
exits with EXIT_PREEMPTED, which a job script can tell apart from success (0) and failure (1).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_early: list[int] = []


def catch_early() -> None:
    """Record the signals from the first moments of a process, before the trainer has imported torch:
    a SIGUSR1 forwarded by a job script at start-up would otherwise end the process without a word.
    The flag installed later takes the recorded signal over."""
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, _frame: _early.append(signum))


class PreemptionFlag:
    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {}

    def install(self) -> PreemptionFlag:
        if _early:
            self.signal = _early[0]
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.signal = signum

    @property
    def raised(self) -> bool:
        return self.signal is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def note_checkpointed(run_dir: Path) -> None:
    """Under a Slurm job, leave `run_dir/slurm/preempted-JOB-RESTART` once the checkpoint after a
    signal is complete (rank 0, before the ranks part). The job script requeues on it: srun's exit
    code alone can say "killed" when one rank exits 75 a moment before the others and
    `--kill-on-bad-exit` ends the rest."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return
    folder = Path(run_dir) / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"preempted-{job}-{os.environ.get('SLURM_RESTART_COUNT', '0')}").touch()
