"""User-facing errors. The CLI maps each to an exit code and one clear message."""


class OvernightError(Exception):
    """A failure at run time (exit code 1)."""

    exit_code = 1


class UsageError(OvernightError):
    """Bad configuration or command usage (exit code 2); nothing was changed."""

    exit_code = 2


class ConfigError(UsageError):
    """`overnight.toml` is wrong: the message names the file, the key and what is expected."""
