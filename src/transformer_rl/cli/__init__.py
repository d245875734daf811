"""`trl`: the command line. Thin: each command parses, then calls one plain function.

The app lives in cli/app.py; `main` skips importing it (and torch) for the commands in
cli/base.py.
"""

from __future__ import annotations

import sys


def main() -> None:
    from transformer_rl.cli.base import COMMANDS, base_app

    if sys.argv[1:2] and sys.argv[1] in COMMANDS:
        base_app()()
    else:
        from transformer_rl.cli.app import app

        app()
