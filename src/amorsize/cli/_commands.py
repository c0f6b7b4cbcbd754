"""The commands that plan and run: ``demo``, ``optimize``, ``execute``, ``validate``, ``tune``."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from amorsize.cli import EXIT_FUNCTION_FAILED
from amorsize.cli._inputs import UsageError, dump_json, load_function, read_data, write_results
from amorsize.cli._output import LongRunProgress, console, note
from amorsize.report.data import finite

__all__ = ["cmd_demo", "cmd_execute", "cmd_optimize", "cmd_tune", "cmd_validate"]

_PLAN_OPTIONS = (
    "sample_size",
    "target_chunk_duration",
    "n_jobs",
    "chunksize",
    "executor",
    "max_workers",
    "start_method",
)


def _function_and_data(args: argparse.Namespace) -> tuple[Callable[[Any], Any], Iterable[Any]]:
    _check_outputs(args)
    func = load_function(args.func)
    data = read_data(data_range=args.data_range, data_file=args.data_file, data_jsonl=args.data_jsonl)
    return func, data


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse output paths that cannot work before any work is done (and plotting without matplotlib).

    Raises:
        UsageError: a directory is missing, or the plot's extension is not a format matplotlib writes.
        MissingExtraError: ``--plot`` without matplotlib.
    """
    for option in ("output", "save_config", "plot"):
        path = getattr(args, option, None)
        if path and path != "-":
            parent = Path(path).parent
            if not parent.is_dir():
                raise UsageError(
                    f"--{option.replace('_', '-')}: the directory {str(parent)!r} does not exist"
                )
    if getattr(args, "plot", None):
        from amorsize.report.plot import supported_formats

        formats = supported_formats()
        suffix = Path(args.plot).suffix.lstrip(".").lower()
        if suffix not in formats:
            raise UsageError(
                f"--plot: cannot write {args.plot!r}: give a file ending in one of "
                f"{', '.join('.' + f for f in sorted(formats))}"
            )


def _plan_options(args: argparse.Namespace) -> dict[str, Any]:
    """The planning flags that were given (the API's defaults stand for the rest)."""
    options = {name: getattr(args, name) for name in _PLAN_OPTIONS if getattr(args, name, None) is not None}
    backend = getattr(args, "backend", None)
    scheduler = getattr(args, "scheduler", None)
    if backend == "local" and scheduler:
        raise UsageError("--scheduler runs on a Dask cluster; it cannot go with --backend local")
    if backend == "dask" or scheduler:
        options["backend"] = "dask"
    if scheduler:
        options["client"] = scheduler
    return options


def _plot_or_warn(result: Any, path: str, *, measured: Any = ()) -> None:
    """Plot a decision to ``path``, or say on stderr why there is nothing to plot."""
    if result is None:
        note(
            f"no plot written to {path}: executor, n_jobs and chunksize were all given, so nothing was "
            "measured or predicted",
            kind="warning",
        )
        return
    if result._measurements() is None:
        note(
            f"no plot written to {path}: this version of amorsize.execute does not keep the plan's "
            "measurements; plot with `amorsize optimize FUNC … --plot PATH`",
            kind="warning",
        )
        return
    result.plot(path, measured=measured)
    note(f"plot written to {path}")


# -- demo --------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the built-in workloads serially and with amorsize, and show both."""
    from rich.table import Table

    from amorsize.demo import run_demo
    from amorsize.report.text import seconds
    from amorsize.workloads import WORKLOADS

    known = {w.name: w for w in WORKLOADS}
    if args.list:
        for workload in WORKLOADS:
            print(f"{workload.name:<10} {workload.description}")
        return 0
    unknown = [name for name in args.workload if name not in known]
    if unknown:
        raise UsageError(f"unknown workload {unknown[0]!r}; choose from {', '.join(known)}")
    if not args.json:
        note(
            "running the built-in workloads serially, then with amorsize.execute "
            "(dry run and planning included)…"
        )
    rows = run_demo(args.workload)
    if args.json:
        for row in rows:
            print(
                dump_json(
                    {
                        "workload": row.workload,
                        "plan": row.plan,
                        "serial_seconds": row.serial_seconds,
                        "amorsize_seconds": row.amorsize_seconds,
                        "predicted_seconds": row.predicted_seconds,
                        "speedup": row.speedup,
                    }
                )
            )
        return 0
    table = Table(title="amorsize demo: measured wall times", title_justify="left")
    for column, justify in (("workload", "left"), ("what", "left"), ("plan chosen", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for column in ("serial", "amorsize", "speedup"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row.workload,
            known[row.workload].description,
            row.plan,
            seconds(row.serial_seconds),
            seconds(row.amorsize_seconds),
            f"{row.speedup:.2f}×",
            style="green" if row.speedup >= 1.2 else None,
        )
    console().print(table)
    return 0


# -- optimize ----------------------------------------------------------------------------------------


def cmd_optimize(args: argparse.Namespace) -> int:
    """Recommend a plan; print it (human or JSON); optionally save it and plot it."""
    from amorsize.api import optimize
    from amorsize.report.console import result_report

    func, data = _function_and_data(args)
    # profile=True only attaches what was measured anyway: the reports, --json --profile and --plot use it.
    result = optimize(func, data, profile=True, **_plan_options(args))
    if args.json:
        print(dump_json(result.to_dict(include_profile=args.profile)))
        if args.verbose:
            console(sys.stderr).print(result_report(result))
    else:
        console().print(result_report(result, measurements=args.profile or args.verbose))
    if args.save_config:
        result.save_config(
            args.save_config, function_name=args.func, target_chunk_duration=args.target_chunk_duration
        )
        note(f"plan saved to {args.save_config}")
    if args.plot:
        _plot_or_warn(result, args.plot)
    return 0


# -- execute -----------------------------------------------------------------------------------------


def _execute_supports(name: str) -> bool:
    """Whether the installed ``execute_planned`` takes the keyword ``name`` (resilience options)."""
    from amorsize.api import execute_planned

    return name in inspect.signature(execute_planned).parameters


def _require_support(name: str, option: str) -> None:
    if not _execute_supports(name):
        raise UsageError(f"{option} is not supported by this version of amorsize.execute")


def cmd_execute(args: argparse.Namespace) -> int:
    """Plan and run; results as JSON lines (or one JSON object with --json)."""
    from amorsize.api import execute_planned
    from amorsize.config import SavedConfig, load_config, save_config

    options = _plan_options(args)
    if args.load_config:
        config = load_config(args.load_config)
        options = {**config.execute_options(), **options}
    run_options: dict[str, Any] = {}
    if args.timeout is not None:
        run_options["timeout"] = args.timeout
    if args.on_error is not None:
        run_options["on_error"] = args.on_error
    if args.checkpoint is not None:
        _require_support("checkpoint", "--checkpoint")
        run_options["checkpoint"] = Path(args.checkpoint)  # the CLI takes a file path, never a store name
    if args.retries is not None:
        _require_support("retry", "--retries")
        from amorsize.resilience.retry import RetryPolicy

        run_options["retry"] = RetryPolicy(max_retries=args.retries)
    if args.on_error == "dlq" or args.dlq_dir or args.dlq_name != "default":
        _require_support("dlq", "--on-error dlq")
        if args.on_error != "dlq":
            raise UsageError("--dlq-dir and --dlq-name say where `--on-error dlq` puts failed items; add it")
        from amorsize.cli._store import open_queue

        run_options["dlq"] = open_queue(args)
    func, data = _function_and_data(args)
    progress = LongRunProgress(enabled=args.progress)
    results, report, plan = execute_planned(
        func, data, verbose=args.verbose, hooks=[progress], **run_options, **options
    )
    if args.output:
        write_results(results, args.output, sys.stdout)
    if args.json:
        plan_json: dict[str, Any] = (
            plan.to_dict()
            if plan is not None
            else {
                "executor": report.executor,
                "n_jobs": report.n_workers,
                "chunksize": report.initial_chunksize,
            }
        )
        run = {
            "status": report.status,
            "n_items": report.n_items,
            "n_failed": report.n_failed,
            "wall_seconds": finite(report.wall_seconds),
            "predicted_seconds": finite(report.predicted_seconds),
            "final_chunksize": report.final_chunksize,
        }
        out: dict[str, Any] = {"results": results} if not args.output else {"output": args.output}
        out.update(plan=plan_json, run=run)
        print(dump_json(out))
    elif not args.output:
        write_results(results, None, sys.stdout)
    if args.save_config:
        source = plan or SavedConfig(report.executor, report.n_workers, report.initial_chunksize)
        diagnostics = None if plan is None else plan._measurements()
        save_config(
            source,
            args.save_config,
            function_name=args.func,
            target_chunk_duration=options.get("target_chunk_duration"),
            machine=None if diagnostics is None else diagnostics.machine,
        )
        note(f"plan saved to {args.save_config}")
    if args.plot:
        _plot_or_warn(plan, args.plot)
    if report.n_failed:
        first = report.failures[0] if report.failures else None
        detail = f" (first: item {first.index}: {type(first.error).__name__}: {first.error})" if first else ""
        where = "their results are null" + ("; see `amorsize dlq list`" if args.on_error == "dlq" else "")
        note(
            f"the function failed on {report.n_failed} of {report.n_items} items{detail}; {where}",
            kind="error",
        )
        return EXIT_FUNCTION_FAILED  # finished, but the function failed on some items
    return 0


# -- validate and tune --------------------------------------------------------------------------------


def _optional(module: str, name: str, command: str) -> Callable[..., Any]:
    """A function of a module that may not exist yet in this build, or a clear error."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        raise UsageError(
            f"`amorsize {command}` is not available in this build of amorsize ({module}.{name} is missing)"
        ) from None


def cmd_validate(args: argparse.Namespace) -> int:
    """Compare the predicted speedup with a measured one."""
    from amorsize.report.console import validation_report
    from amorsize.report.data import validation_dict

    validate_optimization = _optional("amorsize.validation", "validate_optimization", "validate")
    func, data = _function_and_data(args)
    data = list(data)
    outcome = validate_optimization(func, data, verbose=args.verbose, **_plan_options(args))
    if args.json:
        print(dump_json(validation_dict(outcome)))
    else:
        console().print(validation_report(outcome))
    if args.plot:
        plan = outcome.plan
        if plan._measurements() is None:
            # This amorsize.execute does not hand back its measurements: measure again (a dry run on a
            # few items; validate runs the function over the data twice anyway).
            from amorsize.api import optimize

            plan = optimize(func, data, profile=True, **_plan_options(args))
        _plot_or_warn(plan, args.plot, measured=_measured_points(outcome))
    return 0


def _measured_points(validation: Any) -> list[Any]:
    """The validation's speedups on the plot's footing: the run alone, and end to end."""
    from amorsize.report.plot import MeasuredPoint

    plan = validation.plan
    points = []
    n = validation.n_items
    remaining = max(0, n - plan.n_sampled)
    if validation.run_seconds > 0 and n > 0 and remaining > 0:
        serial_remaining = validation.serial_time * remaining / n
        points.append(MeasuredPoint(plan.n_jobs, serial_remaining / validation.run_seconds, "measured run"))
    points.append(MeasuredPoint(plan.n_jobs, validation.actual_speedup, "measured, dry run included"))
    return points


def cmd_tune(args: argparse.Namespace) -> int:
    """Search plans by running them; report the fastest."""
    from amorsize.config import save_config
    from amorsize.report.console import tune_report
    from amorsize.report.data import tune_dict

    tune = _optional("amorsize.tuning", "tune", "tune")
    func, data = _function_and_data(args)
    outcome = tune(func, data, time_budget=args.time_budget, verbose=args.verbose, **_plan_options(args))
    if args.json:
        print(dump_json(tune_dict(outcome)))
    else:
        console().print(tune_report(outcome))
    if args.save_config:
        save_config(
            outcome,
            args.save_config,
            function_name=args.func,
            target_chunk_duration=args.target_chunk_duration,
        )
        note(f"plan saved to {args.save_config}")
    return 0
