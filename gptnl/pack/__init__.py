"""`gptnl pack`: a corpus dir into fixed-length token shards (`run`), tokenised file by file as
datatrove tasks (`tasks`), merged into the shards' format (`shards`); on Slurm, `slurm`."""

from gptnl.pack.run import merge, pack, repack
from gptnl.pack.shards import SPLITS, ShardWriter, split_of, token_dtype

__all__ = ["SPLITS", "ShardWriter", "merge", "pack", "repack", "split_of", "token_dtype"]
