"""The step schedule both training regimes share (`gptnl.trainer.steps`): which step logs,
validates, saves and stops, and in which order, seen through a regime that records its calls."""

from __future__ import annotations

import signal

from gptnl.trainer.preemption import PreemptionFlag
from gptnl.trainer.steps import Cadence, run_steps


class Recorder:
    """A regime that records what the schedule asks of it; a signal arrives before step `signal_at`."""

    def __init__(self, flag: PreemptionFlag, signal_at: int | None = None):
        self.flag, self.signal_at, self.calls = flag, signal_at, []

    def step(self, index):
        if index + 1 == self.signal_at:
            self.flag.signal = signal.SIGUSR1
        self.calls.append(("step", index))

    def log(self, step, preempted):
        self.calls.append(("log", step))

    def validate(self, step):
        self.calls.append(("validate", step))

    def save(self, step):
        self.calls.append(("save", step))

    def advance(self, step):
        self.calls.append(("advance", step))

    def any_rank(self, flag):
        return flag

    def stopped(self, step, sig):
        self.calls.append(("stopped", step, sig))


def run(cadence, start=0, signal_at=None):
    flag = PreemptionFlag()
    regime = Recorder(flag, signal_at)
    done = run_steps(regime, start, cadence, flag)
    return done, regime.calls


def of(calls, kind):
    return [c[1] for c in calls if c[0] == kind]


def test_pre_training_logs_validates_and_saves_on_its_intervals_and_at_the_end():
    done, calls = run(Cadence(max_steps=7, log_every=3, eval_every=2, checkpoint_every=5))
    assert done == (7, False)
    assert of(calls, "step") == list(range(7)) and of(calls, "advance") == list(range(1, 8))
    assert of(calls, "log") == [3, 6, 7]
    assert of(calls, "validate") == [2, 4, 6, 7]
    assert of(calls, "save") == [5, 7]
    # in one step: the line first, then validation, then the checkpoint, then the bar
    assert calls[-5:] == [("step", 6), ("log", 7), ("validate", 7), ("save", 7), ("advance", 7)]


def test_fine_tuning_leaves_the_last_validation_and_checkpoint_to_its_own_end():
    _, calls = run(Cadence(max_steps=6, log_every=1, eval_every=3, checkpoint_every=3, validate_last=False,
                           save_last=False))
    assert of(calls, "log") == [1, 2, 3, 4, 5, 6]
    assert of(calls, "validate") == [3] and of(calls, "save") == [3]


def test_zero_turns_validation_and_periodic_checkpoints_off():
    _, calls = run(Cadence(max_steps=4, log_every=10, eval_every=0, checkpoint_every=0))
    assert of(calls, "validate") == [] and of(calls, "save") == [4] and of(calls, "log") == [4]


def test_a_signal_logs_saves_and_stops_after_the_step_it_arrived_in():
    done, calls = run(Cadence(max_steps=10, log_every=4, eval_every=0, checkpoint_every=0), signal_at=3)
    assert done == (3, True)
    assert calls[-4:] == [("log", 3), ("save", 3), ("advance", 3), ("stopped", 3, signal.SIGUSR1)]
    assert of(calls, "step") == [0, 1, 2]


def test_a_resumed_run_counts_from_its_checkpoint():
    done, calls = run(Cadence(max_steps=6, log_every=2, eval_every=0, checkpoint_every=2), start=4)
    assert done == (6, False) and of(calls, "step") == [4, 5] and of(calls, "save") == [6]
    assert run(Cadence(max_steps=6, log_every=2, eval_every=0, checkpoint_every=2), start=6)[1] == []
