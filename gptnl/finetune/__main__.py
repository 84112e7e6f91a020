"""`torchrun ... -m gptnl.finetune` / `accelerate launch ... -m gptnl.finetune`: the `gptnl finetune` command,
without the rest of the CLI (gptnl/commands/finetune.py)."""

import sys

from gptnl.trainer.preemption import catch_early

catch_early()  # a Slurm signal during the imports below becomes a checkpoint, as in `gptnl.train`

from gptnl.commands import run, single  # noqa: E402
from gptnl.commands.finetune import finetune_cmd  # noqa: E402
from gptnl.finetune.launch import relaunch_if_accelerate_started_one  # noqa: E402

relaunch_if_accelerate_started_one(sys.argv[1:])
run(single(finetune_cmd), sys.argv[1:], prog_name="gptnl finetune")  # the command alone, not the whole CLI
