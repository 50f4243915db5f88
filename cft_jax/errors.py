"""What a command-line user sees when their input is wrong: one line naming the fix, not a traceback.

Standard library only: the side tools (`cft_jax.critique`, `cft_jax.eval`) import this module and
must never pull in JAX or torch through it.

Every user-facing error type of the project (config keys, data records, JSONL lines, checkpoints,
GGUF files) subclasses `InputError`, and every CLI's entry point goes through `run_cli`, so a bad
record reads the same from `python -m cft_jax.data`, `cft_jax.eval`, `cft_jax.critique`,
`cft_jax.convert`, `cft_jax.bench` and `cft_jax.train`:

    error: data/train.jsonl:7: field 'critique': missing; every record needs it

and exits with status 2. `--debug` among the arguments, or `CFT_JAX_DEBUG=1`, shows the traceback
as well, for a report or when the message is not enough.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

EXIT_INPUT_ERROR = 2  # argparse's status for a bad flag, so every kind of bad input exits alike
DEBUG_FLAG = "--debug"
DEBUG_ENV = "CFT_JAX_DEBUG"


class InputError(ValueError):
    """Bad input from the user: a file, a record, a config value, a flag.

    The message names it (file:line, field, value) and the fix. A ValueError, so callers that
    caught ValueError before this type existed still catch it.
    """


# Raised by the operating system for a path the user gave; the message already names the file.
PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Runs a CLI's `main(argv)` and exits with its status; bad input exits 2 with one message.

    `--debug` is taken out of the arguments before `main` sees them (so no parser needs to know
    it); with it, or with CFT_JAX_DEBUG=1, the traceback of a bad input is printed too. Errors that
    are not bad input (bugs) keep their traceback: hiding those would make them harder to report.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        status = main(args)
    except (InputError, *PATH_ERRORS) as error:
        if debug:
            traceback.print_exc()
        print(f"error: {_message(error)}", file=sys.stderr)
        if not debug:
            print(f"(for the traceback, run again with {DEBUG_FLAG} or {DEBUG_ENV}=1)", file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)
    sys.exit(status or 0)
