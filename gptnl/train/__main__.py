"""`torchrun --nproc_per_node=N -m gptnl.train CONFIG --run-dir DIR`: the `gptnl train` command, without
the rest of the CLI (gptnl/commands/train.py)."""

import sys

from gptnl.trainer.preemption import catch_early

catch_early()  # before the imports below, which take seconds

from gptnl.commands import run, single  # noqa: E402
from gptnl.commands.train import train_cmd  # noqa: E402

run(single(train_cmd), sys.argv[1:], prog_name="gptnl train")
