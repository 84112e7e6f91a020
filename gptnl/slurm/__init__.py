"""Slurm: cluster profiles, the in-job environment, and (later) submission, status and logs."""
