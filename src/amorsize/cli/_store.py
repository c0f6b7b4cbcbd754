"""Commands that look into the store: ``history``, ``store info|clear``, ``dlq list|export|replay|clear``."""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from amorsize.cli import EXIT_FUNCTION_FAILED
from amorsize.cli._inputs import UsageError, dump_json, load_function, write_results
from amorsize.cli._output import console, note
from amorsize.report.text import seconds, size
from amorsize.store import MAX_RUNS, Store, default_store

__all__ = ["cmd_dlq", "cmd_history", "cmd_store", "open_queue"]

#: Runs fetched when ``history --function`` filters by name: the whole history (the store keeps at most
#: MAX_RUNS rows, and decoding them all takes well under a second).
_ALL_RUNS = MAX_RUNS


def _when(epoch: Any) -> str:
    if not isinstance(epoch, (int, float)):
        return "?"
    return datetime.datetime.fromtimestamp(epoch).strftime("%m-%d %H:%M")


def _matches(run: dict[str, Any], wanted: str) -> bool:
    name = str(run.get("function_name") or "")
    return (
        name == wanted
        or name.endswith("." + wanted)
        or str(run.get("function_key") or "").startswith(wanted + "#")
    )


# -- history -----------------------------------------------------------------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    """List the recorded runs, newest first."""
    store = default_store()
    if args.function:
        runs = [run for run in store.runs(limit=_ALL_RUNS) if _matches(run, args.function)][: args.limit]
    else:
        runs = store.runs(limit=args.limit)
    if args.json:
        for run in runs:
            print(dump_json(run))
        return 0
    if not runs:
        note("no runs recorded yet" + (f" for {args.function!r}" if args.function else ""))
        return 0
    from rich.table import Table

    table = Table(title=f"Recent runs, newest first (store: {store.path})", title_justify="left", box=None)
    table.add_column("when", no_wrap=True, style="dim")
    table.add_column("function", overflow="fold")
    table.add_column("plan", overflow="fold")
    for column in ("items", "predicted", "measured", "ratio"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for run in runs:
        executor = run.get("executor") or "?"
        plan = (
            "serial" if executor == "serial" else f"{executor} × {run.get('n_jobs')} / {run.get('chunksize')}"
        )
        predicted, measured = run.get("predicted_seconds"), run.get("measured_seconds")
        ratio = "–"
        if isinstance(predicted, (int, float)) and isinstance(measured, (int, float)) and predicted > 0:
            ratio = f"{measured / predicted:.2f}"
        table.add_row(
            _when(run.get("time")),
            str(run.get("function_name") or "?"),
            plan,
            str(run.get("n_items") if run.get("n_items") is not None else "?"),
            seconds(predicted) if isinstance(predicted, (int, float)) else "–",
            seconds(measured) if isinstance(measured, (int, float)) else "–",
            ratio,
            str(run.get("status") or ""),
            style="red" if run.get("status") == "failed" else None,
        )
    table.caption = "plan: executor × workers / chunk size; ratio: measured ÷ predicted"
    table.caption_justify = "left"
    console().print(table)
    return 0


# -- store -------------------------------------------------------------------------------------------


def _store_summary(store: Store) -> dict[str, Any]:
    """Where the store is and how many rows each part holds (every table, so new ones show up too)."""
    with store.transaction() as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        counts = {
            table: conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
            for table in tables
            if not table.startswith("sqlite_")
        }
        namespaces = dict(
            conn.execute("SELECT namespace, COUNT(*) FROM kv GROUP BY namespace ORDER BY namespace")
        )
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    files = [store.path, store.path.with_name(store.path.name + "-wal")]
    return {
        "path": str(store.path),
        "bytes": sum(f.stat().st_size for f in files if f.exists()),
        "schema_version": version,
        "tables": counts,
        "namespaces": namespaces,
        "runs": counts.get("runs", 0),
    }


def cmd_store(args: argparse.Namespace) -> int:
    """``store info`` and ``store clear``."""
    store = default_store()
    if args.store_command == "info":
        summary = _store_summary(store)
        if args.json:
            print(dump_json(summary))
            return 0
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="cyan")
        table.add_column()
        table.add_row("path", summary["path"])
        table.add_row("size", size(summary["bytes"]))
        table.add_row("schema", f"version {summary['schema_version']}")
        table.add_row("history", f"{summary['runs']} runs (`amorsize history`)")
        for namespace, count in summary["namespaces"].items():
            table.add_row(f"namespace {namespace}", f"{count} values")
        for name, count in summary["tables"].items():
            if name not in {"kv", "runs"}:
                table.add_row(f"table {name}", f"{count} rows")
        console().print(Group(Text("Amorsize store", style="bold"), table))
        return 0
    # clear
    namespaces = list(args.namespace)
    history = args.history
    if args.all:
        namespaces = list(_store_summary(store)["namespaces"])
        history = True
    if not namespaces and not history:
        raise UsageError(
            "say what to clear: --namespace NAME, --history or --all (see `amorsize store info`)"
        )
    if not args.yes:
        what = ", ".join(
            [*(f"namespace {n!r}" for n in namespaces), *(["the run history"] if history else [])]
        )
        raise UsageError(f"this would delete {what}; add --yes to do it")
    removed = {namespace: store.clear(namespace) for namespace in namespaces}
    if history:
        with store.transaction() as conn:
            removed["history"] = conn.execute("DELETE FROM runs").rowcount
    for what, count in removed.items():
        note(f"cleared {what}: {count} {'runs' if what == 'history' else 'values'} removed")
    return 0


# -- dead letters ------------------------------------------------------------------------------------


def _dlq_api() -> Any:
    """The dead-letter module, or a clear error when this build has none."""
    try:
        return importlib.import_module("amorsize.resilience.dlq")
    except ImportError:
        raise UsageError(
            "`amorsize dlq` is not available in this build of amorsize (no dead-letter queue)"
        ) from None


def open_queue(args: argparse.Namespace) -> Any:
    """The dead-letter queue named by ``--dlq-dir`` and ``--dlq-name`` (default: the store's ``default``)."""
    api = _dlq_api()
    policy = api.DLQPolicy(directory=args.dlq_dir) if args.dlq_dir else None
    return api.DeadLetterQueue(policy, name=args.dlq_name)


def _entry_dict(entry: Any) -> dict[str, Any]:
    """One entry for ``--json``: the item itself when JSON can hold it, else its repr."""
    out: dict[str, Any] = {"id": entry.id}
    try:
        json.dumps(entry.item)
        out["item"] = entry.item
    except (TypeError, ValueError):
        out["item_repr"] = repr(entry.item)
    out.update(
        error_type=entry.error_type,
        error_message=entry.error_message,
        retry_count=entry.retry_count,
        timestamp=entry.timestamp,
        metadata=entry.metadata,
        replayable=entry.replayable,
    )
    return out


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dlq_list(queue: Any, args: argparse.Namespace) -> int:
    entries = queue.get_entries()[-args.limit :][::-1]  # the newest
    if args.json:
        for entry in entries:
            print(dump_json(_entry_dict(entry)))
        return 0
    if not entries:
        note(f"the dead-letter queue is empty ({queue.location.describe()})")
        return 0
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    summary = queue.get_summary()
    types = ", ".join(f"{name} × {count}" for name, count in sorted(summary.error_types.items()))
    title = Text(f"Dead letters, newest first: {summary.total_entries} in {queue.location.describe()}")
    title.stylize("bold")
    footer = Text(f"error types: {types}; mean retries {summary.avg_retry_count:.1f}", style="dim")
    table = Table(box=None)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("when", no_wrap=True, style="dim")
    table.add_column("item", overflow="fold")
    table.add_column("error", overflow="fold")
    table.add_column("retries", justify="right", no_wrap=True)
    for entry in entries:
        index = entry.metadata.get("index") if isinstance(entry.metadata, dict) else None
        item = _short(dump_json(entry.item) if entry.replayable else str(entry.item))
        table.add_row(
            str(entry.id if entry.id is not None else "–"),
            _when(entry.timestamp),
            item + (f" (#{index})" if index is not None else ""),
            _short(f"{entry.error_type}: {entry.error_message}", 80),
            str(entry.retry_count),
        )
    console().print(Group(title, table, footer))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    """``dlq list|export|replay|clear``."""
    queue = open_queue(args)
    action = args.dlq_command
    if action == "list":
        return _dlq_list(queue, args)
    if action == "export":
        if args.path == "-":
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "dlq.json"
                queue.export_json(target)
                sys.stdout.write(target.read_text(encoding="utf-8") + "\n")
            return 0
        parent = Path(args.path).parent
        if not parent.is_dir():
            raise UsageError(f"cannot write {args.path!r}: the directory {str(parent)!r} does not exist")
        count = queue.export_json(args.path)
        note(f"{count} dead letters written to {args.path}")
        return 0
    if action == "replay":
        func = load_function(args.func)
        recovered, still_failed = _dlq_api().replay_failed_items(queue, func)
        if args.output:
            write_results(recovered, args.output, sys.stdout)
        if args.json:
            print(dump_json({"recovered": len(recovered), "still_failed": len(still_failed)}))
        else:
            note(f"replayed: {len(recovered)} recovered, {len(still_failed)} still failing")
        return EXIT_FUNCTION_FAILED if still_failed else 0
    # clear
    if not args.yes:
        raise UsageError(f"this would delete {queue.size()} dead letters; add --yes to do it")
    note(f"cleared {queue.clear()} dead letters")
    return 0
