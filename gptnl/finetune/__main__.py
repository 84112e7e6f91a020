"""`torchrun ... -m gptnl.finetune` / `accelerate launch ... -m gptnl.finetune`: the `gptnl finetune` command."""

import sys

from gptnl.cli import main
from gptnl.finetune.launch import relaunch_if_accelerate_started_one

relaunch_if_accelerate_started_one(sys.argv[1:])
main(["finetune", *sys.argv[1:]])
