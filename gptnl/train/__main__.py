"""`torchrun --nproc_per_node=N -m gptnl.train CONFIG --run-dir DIR`: the `gptnl train` command."""

import sys

from gptnl.cli import main

main(["train", *sys.argv[1:]])
