"""Turn SIGTERM and SIGUSR1 (Slurm's warning before preemption or the time limit) into a flag.

The trainer checks the flag between steps, agrees on it across ranks, writes a checkpoint and
exits with EXIT_PREEMPTED, which a job script can tell apart from success (0) and failure (1).
"""

from __future__ import annotations

import signal

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
