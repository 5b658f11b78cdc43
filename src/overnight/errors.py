"""User-facing errors. The CLI maps each to an exit code and one clear message."""


class OvernightError(Exception):
    """A failure at run time (exit code 1)."""

    exit_code = 1


class UsageError(OvernightError):
    """Bad configuration or command usage (exit code 2); nothing was changed."""

    exit_code = 2


class ConfigError(UsageError):
    """`overnight.toml` is wrong: the message names the file, the key and what is expected."""


class FlagSource:
    """Names the command-line flag a value came from in the usage errors raised while it is
    used, instead of the config key the flag overrides: `--proposer foo: unknown proposer`,
    not `[proposer].kind: unknown proposer`. A value from the file (`value` None) is left
    to the message, which already names the file and the key."""

    def __init__(self, flag: str, value: object, key: str) -> None:
        self.flag, self.value, self.key = flag, value, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if self.value is None or not isinstance(exc, UsageError):
            return
        message = str(exc).removeprefix(f"{self.key}: ")
        raise UsageError(f"{self.flag} {self.value}: {message}") from None
