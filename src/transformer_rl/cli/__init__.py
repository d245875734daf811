"""`trl`: the command line. Thin: each command parses, then calls one plain function.

The app lives in cli/app.py; `main` skips importing it (and torch) for the commands in
cli/base.py.
"""

from __future__ import annotations

import sys


def main() -> None:
    import signal

    from transformer_rl.cli.base import COMMANDS, base_app

    # SIGTERM (a scheduler, `kill`, torchrun stopping its ranks) unwinds like Ctrl-C, so that a
    # command removes what it must not leave half-made (an evaluation's --record) and releases
    # its locks; a second signal while unwinding is ignored
    signal.signal(signal.SIGTERM, _interrupt)

    if sys.argv[1:2] and sys.argv[1] in COMMANDS:
        base_app()()
    else:
        from transformer_rl.cli.app import app

        app()


def _interrupt(signum, frame) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt
