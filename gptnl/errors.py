"""Errors a user can act on. The CLI prints them as one red line; anything else is a bug."""


class GptnlError(Exception):
    """A problem with the user's input, files or environment, with a message that says what to do."""


class ConfigError(GptnlError):
    """A YAML config that does not exist, does not parse, or does not validate."""


class CorpusError(GptnlError):
    """A corpus dir or document that cannot be read."""


class CheckpointError(GptnlError):
    """No usable checkpoint, or one that cannot be resumed in this setting."""
