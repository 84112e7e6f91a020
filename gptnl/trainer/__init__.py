"""The trainer core both training regimes build on: checkpoints, the masked next-token loss, the
optimizer and schedule, metrics, preemption and the process group. Pre-training (`gptnl.train`)
and fine-tuning (`gptnl.finetune`) import from here, never from each other."""
