"""The ``amorsize`` command (also ``python -m amorsize``).

Commands::

    amorsize demo                       the built-in workloads, serial vs amorsize
    amorsize optimize FUNC [data]       recommend a plan (human report, --json, --save-config, --plot)
    amorsize execute FUNC [data]        plan and run; results as JSON lines (--output, --json, --load-config)
    amorsize validate FUNC [data]       measured speedup against predicted
    amorsize tune FUNC [data]           search plans by running them
    amorsize history                    past runs, predicted vs measured
    amorsize store info|clear           the store: where it is, what it holds
    amorsize dlq list|export|replay|clear   dead letters

Errors a user can cause are one line on stderr and a distinct exit code, never a traceback
(``--debug`` shows it):

====  =========================================================================================
0     success
1     a failure that is not the user's function: the store, a missing optional dependency, a bug
2     a usage error: bad arguments, FUNC not found, unreadable data, a bad config file
3     the user's function failed: it raised (dry run or run), timed out or its worker died; also
      a run that finished with failed items (``--on-error collect``/``dlq``)
130   interrupted (Ctrl-C)
====  =========================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from amorsize.cli._inputs import UsageError, load_function
from amorsize.errors import (
    AmorsizeError,
    CheckpointMismatchError,
    ConfigurationError,
    ExecutionError,
    MissingExtraError,
    SamplingError,
)

__all__ = ["EXIT_FAILURE", "EXIT_FUNCTION_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "load_function", "main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_FUNCTION_FAILED = 3
EXIT_INTERRUPTED = 130


def _handlers() -> dict[str, Callable[[argparse.Namespace], int]]:
    from amorsize.cli._commands import cmd_demo, cmd_execute, cmd_optimize, cmd_tune, cmd_validate
    from amorsize.cli._store import cmd_dlq, cmd_history, cmd_store

    return {
        "demo": cmd_demo,
        "optimize": cmd_optimize,
        "execute": cmd_execute,
        "validate": cmd_validate,
        "tune": cmd_tune,
        "history": cmd_history,
        "store": cmd_store,
        "dlq": cmd_dlq,
    }


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(message: str) -> None:
    print(f"amorsize: error: {_one_line(message)}", file=sys.stderr)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show each Python warning as one ``amorsize: warning: …`` line on stderr (no source line)."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        print(f"amorsize: warning: {_one_line(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _function_failure(error: AmorsizeError) -> str:
    text = str(error)
    cause = error.__cause__
    if isinstance(error, SamplingError) or cause is None or str(cause) in text:
        return text
    return f"{text} ({type(cause).__name__}: {cause})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 for a failure outside the user's function, 2 for a usage error, 3 when the
        user's function failed, 130 when interrupted.

    Example:
        >>> main(["optimize", "math.factorial", "--data-range", "50", "--json"])  # doctest: +ELLIPSIS
        {"executor": "serial", ...}
        0
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments
    try:
        from amorsize.cli._parser import parse

        try:
            args = parse(arguments)
        except SystemExit as done:  # --help and --version
            return done.code if isinstance(done.code, int) else 0
        debug = debug or bool(getattr(args, "debug", False))
        with _warnings_as_lines():
            return _handlers()[args.command](args)
    except (UsageError, ConfigurationError, CheckpointMismatchError) as error:
        if debug:
            raise
        _error(str(error))
        return EXIT_USAGE
    except (SamplingError, ExecutionError) as error:
        if debug:
            raise
        print(f"amorsize: the function failed: {_one_line(_function_failure(error))}", file=sys.stderr)
        return EXIT_FUNCTION_FAILED
    except (AmorsizeError, MissingExtraError) as error:
        if debug:
            raise
        _error(str(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("amorsize: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`amorsize execute … | head`): stop quietly, as the shell expects.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as error:
        if debug:
            raise
        _error(f"internal error: {type(error).__name__}: {error} (run again with --debug for the traceback)")
        return EXIT_FAILURE
