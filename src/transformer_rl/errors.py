"""The exceptions for what a user can cause: the CLI prints the message as one line."""


class UsageError(Exception):
    """Bad input: the message is one line that names the problem and the fix (exit code 2).
    From the Python API, ``parameter`` names the argument at fault (None when none is)."""

    parameter: str | None = None


class DamagedData(UsageError):
    """A dataset or checkpoint on disk is not what its metadata says (`trl datasets validate`
    and `verify` report it as a failed check, exit code 1)."""


class Busy(UsageError):
    """Another process is writing the dataset, run directory or checkpoint (it holds the lock)."""
