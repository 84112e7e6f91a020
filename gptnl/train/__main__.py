"""`torchrun --nproc_per_node=N -m gptnl.train CONFIG --run-dir DIR`: the `gptnl train` command."""

import sys

from gptnl.train.preemption import catch_early

catch_early()  # before the imports below, which take seconds

from gptnl.cli import main  # noqa: E402

main(["train", *sys.argv[1:]])
