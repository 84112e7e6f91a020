"""`torchrun ... -m gptnl.finetune` / `accelerate launch ... -m gptnl.finetune`: the `gptnl finetune` command."""

import sys

from gptnl.train.preemption import catch_early

catch_early()  # a Slurm signal during the imports below becomes a checkpoint, as in `gptnl.train`

from gptnl.cli import main  # noqa: E402
from gptnl.finetune.launch import relaunch_if_accelerate_started_one  # noqa: E402

relaunch_if_accelerate_started_one(sys.argv[1:])
main(["finetune", *sys.argv[1:]])
