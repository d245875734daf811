"""The one exception for mistakes a user can make: the CLI prints its message and exits 2."""


class UsageError(Exception):
    """Bad input: the message is one line that names the problem and the fix."""
