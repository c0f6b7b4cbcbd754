"""The ``amorsize`` command (also ``python -m amorsize``).

Errors a user can cause are one line on stderr and a non-zero exit, never a traceback
(``--debug`` shows it): exit 2 for a usage error, 3 when the user's function failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from amorsize import __version__
from amorsize.errors import AmorsizeError, ConfigurationError, ExecutionError, SamplingError

__all__ = ["EXIT_FAILURE", "EXIT_FUNCTION_FAILED", "EXIT_USAGE", "load_function", "main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_FUNCTION_FAILED = 3


class _UsageError(Exception):
    """A mistake on the command line: shown as one line, exit code 2."""


def load_function(spec: str) -> Callable[[Any], Any]:
    """Resolve ``package.module.func``, ``package.module:func`` or ``path/to/file.py:func``.

    Args:
        spec: where the function lives.

    Returns:
        The callable.

    Raises:
        _UsageError: it cannot be found or is not callable (the message says what was tried).
    """
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        path_text, name = spec.rsplit(":", 1)
        path = Path(path_text)
        if not path.is_file():
            raise _UsageError(f"no such file {path_text!r} (from FUNC {spec!r})")
        module_name = f"amorsize_user_{path.stem}"
        spec_obj = importlib.util.spec_from_file_location(module_name, path)
        if spec_obj is None or spec_obj.loader is None:
            raise _UsageError(f"cannot import {path_text!r} as a Python file")
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.resolve().parent))
        spec_obj.loader.exec_module(module)
    else:
        if ":" in spec:
            module_name, name = spec.split(":", 1)
        elif "." in spec:
            module_name, name = spec.rsplit(".", 1)
        else:
            raise _UsageError(
                f"FUNC must look like package.module.func, package.module:func or file.py:func (got {spec!r})"
            )
        if "" not in sys.path:
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise _UsageError(f"cannot import module {module_name!r}: {error}") from error
    func = module
    for part in name.split("."):
        try:
            func = getattr(func, part)
        except AttributeError:
            raise _UsageError(f"module {module_name!r} has no attribute {name!r}") from None
    if not callable(func):
        raise _UsageError(f"{spec!r} is a {type(func).__name__}, not a function")
    return func


def _data(args: argparse.Namespace) -> Iterable[Any]:
    if args.data_range is not None:
        if args.data_range < 0:
            raise _UsageError(f"--data-range must be >= 0 (got {args.data_range})")
        return range(args.data_range)
    if args.data_file is not None:
        path = Path(args.data_file)
        if not path.is_file():
            raise _UsageError(f"--data-file: no such file {args.data_file!r}")
        return [line.rstrip("\n") for line in path.read_text().splitlines()]
    if args.data_jsonl is not None:
        path = Path(args.data_jsonl)
        if not path.is_file():
            raise _UsageError(f"--data-jsonl: no such file {args.data_jsonl!r}")
        items = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise _UsageError(f"--data-jsonl: line {number} is not JSON: {error.msg}") from None
        return items
    if sys.stdin is not None and not sys.stdin.isatty():
        return [line.rstrip("\n") for line in sys.stdin]
    raise _UsageError("no data: give --data-range N, --data-file PATH, --data-jsonl PATH or pipe lines in")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "func", metavar="FUNC", help="package.module.func, package.module:func or file.py:func"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-range", type=int, metavar="N", help="items 0 … N-1")
    source.add_argument("--data-file", metavar="PATH", help="one item (a string) per line")
    source.add_argument("--data-jsonl", metavar="PATH", help="one JSON value per line")
    parser.add_argument("--sample-size", type=int, default=5, help="items to sample (default 5)")
    parser.add_argument("--target-chunk-duration", type=float, default=0.2, help="seconds (default 0.2)")
    parser.add_argument("--n-jobs", type=int, help="force the number of workers")
    parser.add_argument("--chunksize", type=int, help="force the chunk size")
    parser.add_argument("--executor", choices=("serial", "threads", "processes"), help="force the executor")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--verbose", action="store_true", help="explain the decision on stderr")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amorsize",
        description="Decide how a function should run over data, then run it that way.",
        epilog="Example: amorsize optimize math.factorial --data-range 100",
    )
    parser.add_argument("--version", action="version", version=f"amorsize {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="plan and run the built-in workloads, compared with serial",
        epilog="Example: amorsize demo --workload io --workload cpu",
    )
    demo.add_argument("--workload", action="append", default=[], help="run only this workload (repeatable)")

    optimize = commands.add_parser(
        "optimize",
        help="recommend how to run FUNC over the data",
        epilog="Example: amorsize optimize math.factorial --data-range 100 --json",
    )
    _add_data_options(optimize)
    optimize.add_argument("--profile", action="store_true", help="include the measured profile")

    execute = commands.add_parser(
        "execute",
        help="run FUNC over the data the recommended way; results as JSON lines",
        epilog="Example: amorsize execute math.factorial --data-range 100 --json",
    )
    _add_data_options(execute)
    execute.add_argument("--timeout", type=float, help="seconds one item may run")
    execute.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    execute.add_argument("--output", metavar="PATH", help="write results as JSON lines to PATH")
    return parser


def _optimize_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "sample_size": args.sample_size,
        "target_chunk_duration": args.target_chunk_duration,
        "n_jobs": args.n_jobs,
        "chunksize": args.chunksize,
        "executor": args.executor,
    }


def _plan_json(result: Any) -> dict[str, Any]:
    return {
        "n_jobs": result.n_jobs,
        "chunksize": result.chunksize,
        "executor": result.executor,
        "estimated_speedup": round(result.estimated_speedup, 4),
        "predicted_serial_time": result.predicted_serial_time,
        "predicted_parallel_time": result.predicted_parallel_time,
        "reason": result.reason,
        "warnings": list(result.warnings),
    }


def _cmd_demo(args: argparse.Namespace) -> int:
    from amorsize.demo import render, run_demo
    from amorsize.workloads import WORKLOADS

    known = {w.name for w in WORKLOADS}
    unknown = [name for name in args.workload if name not in known]
    if unknown:
        raise _UsageError(f"unknown workload {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    print("Running the built-in workloads serially and with amorsize.execute (analysis included)…")
    rows = run_demo(args.workload)
    print(render(rows))
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from amorsize.api import optimize

    func = load_function(args.func)
    result = optimize(func, _data(args), verbose=args.verbose, profile=args.profile, **_optimize_kwargs(args))
    if args.json:
        out = _plan_json(result)
        if result.profile is not None:
            p = result.profile
            out["profile"] = {
                "n_sampled": p.n_sampled,
                "mean_item_seconds": p.profile.mean_duration,
                "coefficient_of_variation": p.coefficient_of_variation,
                "cpu_ratio": p.cpu_ratio,
                "thread_speedup": p.thread_speedup,
                "input_bytes": p.input_bytes,
                "output_bytes": p.output_bytes,
                "peak_memory_bytes": p.peak_memory_bytes,
                "breakdown": dict(p.breakdown),
            }
        print(json.dumps(out))
    else:
        print(result)
    return 0


def _cmd_execute(args: argparse.Namespace) -> int:
    from amorsize.api import execute_planned

    func = load_function(args.func)
    results, report, plan = execute_planned(
        func,
        _data(args),
        verbose=args.verbose,
        progress=args.progress and sys.stderr.isatty(),
        timeout=args.timeout,
        **_optimize_kwargs(args),
    )
    if args.output:
        with open(args.output, "w") as out:
            for value in results:
                out.write(json.dumps(value, default=repr) + "\n")
    if args.json:
        plan_json = (
            _plan_json(plan)
            if plan is not None
            else {
                "n_jobs": report.n_workers,
                "chunksize": report.initial_chunksize,
                "executor": report.executor,
            }
        )
        print(json.dumps({"results": [] if args.output else results, "plan": plan_json}, default=repr))
    elif not args.output:
        for value in results:
            print(json.dumps(value, default=repr))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for a usage error, 3 when the user's function failed, 1 otherwise.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    handlers = {"demo": _cmd_demo, "optimize": _cmd_optimize, "execute": _cmd_execute}
    try:
        return handlers[args.command](args)
    except (_UsageError, ConfigurationError) as error:
        if args.debug:
            raise
        print(f"amorsize: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (SamplingError, ExecutionError) as error:
        if args.debug:
            raise
        cause = f" ({type(error.__cause__).__name__}: {error.__cause__})" if error.__cause__ else ""
        print(f"amorsize: the function failed: {error}{cause}".splitlines()[0], file=sys.stderr)
        return EXIT_FUNCTION_FAILED
    except AmorsizeError as error:
        if args.debug:
            raise
        print(f"amorsize: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("amorsize: interrupted", file=sys.stderr)
        return 130
