"""The argument parser: every command, its options, and an example in each ``--help``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from amorsize.cli._inputs import UsageError

__all__ = ["build_parser", "parse"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake becomes a :class:`UsageError` (one line, exit 2) instead of usage + exit.

    Options are not abbreviated: ``--data-json`` would otherwise be taken as ``--data-jsonl`` and its
    JSON text read as a file name.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise _usage_error(self.prog, message)


def _usage_error(prog: str, message: str) -> UsageError:
    """The one-line usage error, pointing at ``prog``'s ``--help``."""
    return UsageError(f"{message} (see `{prog} --help`)")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; a little wider than the default."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_command(
    commands: argparse._SubParsersAction[_Parser],
    name: str,
    summary: str,
    description: str,
    examples: Sequence[str],
) -> _Parser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=_examples(*examples),
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show Python tracebacks for errors"
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {value})")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number (got {text})")
    return value


def _add_function_and_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "func",
        metavar="FUNC",
        help="the function: package.module.func, package.module:func or path/file.py:func",
    )
    data = parser.add_argument_group("data (one of these; else lines piped on standard input)")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--data-range", type=_non_negative_int, metavar="N", help="the integers 0 … N-1")
    source.add_argument("--data-file", metavar="PATH", help="one item (a string) per line; - reads stdin")
    source.add_argument("--data-jsonl", metavar="PATH", help="one JSON value per line; - reads stdin")


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    plan = parser.add_argument_group("planning (as in amorsize.optimize)")
    plan.add_argument(
        "--sample-size", type=_positive_int, metavar="N", help="items to time in the dry run (5)"
    )
    plan.add_argument(
        "--target-chunk-duration",
        type=_positive_float,
        metavar="SECONDS",
        help="seconds one chunk should take (0.2)",
    )
    plan.add_argument("--n-jobs", type=_positive_int, metavar="N", help="force the number of workers")
    plan.add_argument("--chunksize", type=_positive_int, metavar="N", help="force the items per chunk")
    plan.add_argument(
        "--executor", choices=("serial", "threads", "processes", "dask"), help="force the executor"
    )
    plan.add_argument(
        "--backend",
        choices=("local", "dask"),
        help="run on this machine (local, the default) or on a Dask cluster (needs amorsize[dask])",
    )
    plan.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler to use, e.g. tcp://10.0.0.5:8786 (implies --backend dask)",
    )
    plan.add_argument("--max-workers", type=_positive_int, metavar="N", help="never use more workers than N")
    plan.add_argument(
        "--start-method",
        choices=("fork", "forkserver", "spawn"),
        help="multiprocessing start method to plan for",
    )


def _add_queue_options(parser: argparse.ArgumentParser) -> None:
    queue = parser.add_argument_group("dead-letter queue")
    queue.add_argument(
        "--dlq-dir", metavar="DIR", help="keep the queue in DIR/amorsize.sqlite3 (default: the user's store)"
    )
    queue.add_argument("--dlq-name", metavar="NAME", default="default", help="the queue's name (default)")


def build_parser() -> _Parser:
    """The ``amorsize`` argument parser.

    Returns:
        The parser; ``parse_args`` raises :class:`UsageError` on a mistake.
    """
    from amorsize import __version__

    parser = _Parser(
        prog="amorsize",
        description=(
            "Decide how a function should run over data (serial, threads or processes; workers;\n"
            "chunk size), "
            "then run it that way. Exit codes: 0 ok, 1 other failure, 2 usage error, 3 the function failed."
        ),
        epilog=_examples(
            "amorsize demo",
            "amorsize optimize math.factorial --data-range 2000",
            "amorsize execute mymodule.process --data-jsonl items.jsonl --output results.jsonl",
        ),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"amorsize {__version__}")
    parser.add_argument(
        "--debug", action="store_true", default=False, help="show Python tracebacks for errors"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = _add_command(
        commands,
        "demo",
        "plan and run the built-in example workloads, compared with serial",
        "Run each built-in workload serially and with amorsize, and show the plan and both times.",
        ["amorsize demo", "amorsize demo --workload io --workload cpu"],
    )
    demo.add_argument(
        "--workload", action="append", default=[], metavar="NAME", help="only this one (repeatable)"
    )
    demo.add_argument("--list", action="store_true", help="list the workloads and exit")
    demo.add_argument("--json", action="store_true", help="print one JSON object per workload")

    optimize = _add_command(
        commands,
        "optimize",
        "recommend how to run FUNC over the data (no full run)",
        "Time FUNC on a few items, probe this machine and recommend executor, workers and chunk size.\n"
        "Only the dry run's items are computed.",
        [
            "amorsize optimize math.factorial --data-range 2000",
            "amorsize optimize mymodule.func --data-range 1000 --profile",
            "amorsize optimize mymodule:func --data-jsonl items.jsonl --json --save-config plan.json",
            "amorsize optimize tasks.py:resize --data-file images.txt --plot plan.png",
        ],
    )
    _add_function_and_data(optimize)
    _add_plan_options(optimize)
    out = optimize.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the recommendation as one JSON object")
    out.add_argument(
        "--profile", action="store_true", help="include what was measured, the machine and the alternatives"
    )
    out.add_argument("--verbose", "-v", action="store_true", help="the full report (on stderr with --json)")
    out.add_argument(
        "--save-config", metavar="PATH", help="save the plan as a JSON config (for execute --load-config)"
    )
    out.add_argument(
        "--plot", metavar="PATH", help="draw predicted speedup and overheads to PATH (.png/.svg/.pdf)"
    )

    execute = _add_command(
        commands,
        "execute",
        "run FUNC over the data the recommended way; results as JSON lines",
        "Plan as `optimize` does, then run FUNC over every item (each exactly once: the dry run's\n"
        "results are kept). Results go to stdout or --output, one JSON value per line, in input order.",
        [
            "amorsize execute math.factorial --data-range 1000 --output out.jsonl",
            "amorsize execute mymodule.process --data-range 1000 --json",
            "amorsize execute mymodule.func --data-range 10000 --load-config plan.json",
            "cat urls.txt | amorsize execute fetch.py:fetch --on-error collect > pages.jsonl",
        ],
    )
    _add_function_and_data(execute)
    _add_plan_options(execute)
    run = execute.add_argument_group("running")
    run.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help="seconds one item may run")
    run.add_argument(
        "--on-error",
        choices=("raise", "collect", "dlq"),
        help="raise: stop at the first failure (default); collect: failed items give null; "
        "dlq: failed items go to the dead-letter queue",
    )
    run.add_argument("--retries", type=_non_negative_int, metavar="N", help="retry a failing item N times")
    run.add_argument("--checkpoint", metavar="PATH", help="save progress to PATH and resume from it")
    run.add_argument("--load-config", metavar="PATH", help="run a saved plan (no dry run); flags override it")
    progress = run.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show a progress bar"
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show one")
    _add_queue_options(execute)
    out = execute.add_argument_group("output")
    out.add_argument("--output", "-o", metavar="PATH", help="write the results as JSON lines to PATH")
    out.add_argument(
        "--json", action="store_true", help='print {"results": [...], "plan": {...}} as one object'
    )
    out.add_argument(
        "--verbose", "-v", action="store_true", help="explain the plan and summarise the run on stderr"
    )
    out.add_argument("--save-config", metavar="PATH", help="save the plan that ran as a JSON config")
    out.add_argument("--plot", metavar="PATH", help="draw predicted speedup and overheads to PATH")

    validate = _add_command(
        commands,
        "validate",
        "check the prediction: run FUNC serially and with the plan, and compare",
        "Optimize, then time a serial run and a run with the plan over the data, and report the\n"
        "measured speedup next to the predicted one. FUNC runs over the data twice.",
        [
            "amorsize validate mymodule.func --data-range 500",
            "amorsize validate mymodule.func --data-range 500 --json --plot check.png",
        ],
    )
    _add_function_and_data(validate)
    _add_plan_options(validate)
    out = validate.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the comparison as one JSON object")
    out.add_argument("--verbose", "-v", action="store_true", help="say what is being run on stderr")
    out.add_argument("--plot", metavar="PATH", help="draw predicted speedups with the measured one")

    tune = _add_command(
        commands,
        "tune",
        "search plans by running them, within a time budget",
        "Try executors, worker counts and chunk sizes on the data by really running them, and report the\n"
        "fastest. Slower than optimize; use it to check or refine a plan.",
        [
            "amorsize tune mymodule.func --data-range 2000 --time-budget 20",
            "amorsize tune mymodule.func --data-range 2000 --save-config tuned.json",
        ],
    )
    _add_function_and_data(tune)
    _add_plan_options(tune)
    tune.add_argument("--time-budget", type=_positive_float, metavar="SECONDS", default=10.0, help="(10)")
    out = tune.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    out.add_argument("--verbose", "-v", action="store_true", help="show each trial on stderr")
    out.add_argument("--save-config", metavar="PATH", help="save the fastest plan as a JSON config")

    history = _add_command(
        commands,
        "history",
        "list past runs: plan, predicted and measured time",
        "List the runs recorded in the store (newest first): what ran, how, predicted and measured.",
        ["amorsize history", "amorsize history --function spin --limit 5 --json"],
    )
    history.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="at most N runs (20)")
    history.add_argument(
        "--function", metavar="NAME", help="only runs of this function (its name, or the end of it)"
    )
    history.add_argument("--json", action="store_true", help="one JSON object per line")

    store = _add_command(
        commands,
        "store",
        "inspect or clear the store (calibration, caches, history)",
        "Amorsize keeps machine calibration, caches and run history in one SQLite file\n"
        "($AMORSIZE_HOME, else a per-user directory).",
        ["amorsize store info", "amorsize store clear --history --yes", "amorsize store clear --all --yes"],
    )
    store_commands = store.add_subparsers(
        dest="store_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    info = _add_command(
        store_commands,
        "info",
        "where the store is and what it holds",
        "Show the store's path and contents.",
        ["amorsize store info", "amorsize store info --json"],
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    clear = _add_command(
        store_commands,
        "clear",
        "delete calibration, cached values and/or history",
        "Delete parts of the store. Calibration is re-measured (well under a second) on the next run.",
        ["amorsize store clear --history --yes", "amorsize store clear --namespace calibration --yes"],
    )
    clear.add_argument(
        "--namespace", action="append", default=[], metavar="NAME", help="a namespace (repeatable)"
    )
    clear.add_argument("--history", action="store_true", help="the run history")
    clear.add_argument("--all", action="store_true", help="every namespace and the history")
    clear.add_argument("--yes", action="store_true", help="do it (required: nothing is deleted without it)")

    dlq = _add_command(
        commands,
        "dlq",
        "dead letters: items that failed for good (list, export, replay, clear)",
        "Inspect and act on the dead-letter queue filled by `execute --on-error dlq`.",
        [
            "amorsize dlq list",
            "amorsize dlq export failed.json",
            "amorsize dlq replay mymodule.func --output recovered.jsonl",
            "amorsize dlq clear --yes",
        ],
    )
    dlq_commands = dlq.add_subparsers(
        dest="dlq_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    dlq_list = _add_command(
        dlq_commands,
        "list",
        "show the dead letters",
        "Show the failed items, newest first.",
        ["amorsize dlq list --limit 20", "amorsize dlq list --json"],
    )
    dlq_list.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="at most N entries (50)"
    )
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_queue_options(dlq_list)
    export = _add_command(
        dlq_commands,
        "export",
        "write the dead letters to a JSON file",
        "Write every entry to PATH as JSON.",
        ["amorsize dlq export failed.json"],
    )
    export.add_argument("path", metavar="PATH", help="the JSON file to write (- for stdout)")
    _add_queue_options(export)
    replay = _add_command(
        dlq_commands,
        "replay",
        "run FUNC again on the dead letters",
        "Call FUNC on every dead-lettered item again (after fixing the cause). Recovered items leave the\n"
        "queue; items that fail again stay in it.",
        ["amorsize dlq replay mymodule.func", "amorsize dlq replay tasks.py:fetch --output recovered.jsonl"],
    )
    replay.add_argument(
        "func",
        metavar="FUNC",
        help="the function: package.module.func, package.module:func or path/file.py:func",
    )
    replay.add_argument(
        "--output", "-o", metavar="PATH", help="write the recovered results as JSON lines to PATH"
    )
    replay.add_argument("--json", action="store_true", help="print a JSON summary")
    _add_queue_options(replay)
    dlq_clear = _add_command(
        dlq_commands,
        "clear",
        "delete every dead letter",
        "Empty the dead-letter queue.",
        ["amorsize dlq clear --yes"],
    )
    dlq_clear.add_argument("--yes", action="store_true", help="do it (required)")
    _add_queue_options(dlq_clear)
    return parser


def parse(arguments: Sequence[str]) -> argparse.Namespace:
    """Parse the command line; an unknown option names the command whose ``--help`` lists the options.

    Args:
        arguments: the arguments, without the program name.

    Returns:
        The parsed arguments (``command`` is the command's name).

    Raises:
        UsageError: a mistake in the arguments.
        SystemExit: for ``--help`` and ``--version``.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(arguments)
    if extras:
        raise _usage_error(f"{parser.prog} {args.command}", f"unrecognized arguments: {' '.join(extras)}")
    return args
