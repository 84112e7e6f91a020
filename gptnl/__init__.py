"""gptnl: an open, sovereign stack for training, serving and evaluating Dutch language models."""

__version__ = "0.1.0"
