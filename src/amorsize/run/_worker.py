"""The main loop of a worker process of :class:`~amorsize.run.backends.processes.ProcessBackend`.

Kept small and light to import: a spawned worker imports this module (and what the function needs)
before it can run anything.

::

    parent (manager thread)                          worker process (this module)
    ───────────────────────                          ────────────────────────────
                                ◄── READY(pid) ───── started; SIGINT ignored; BLAS limited
    task frame (one per chunk) ──────────────────►   task_no += 1; decode; load func (cache)
                                                     for pos, item in items:
    reads slot[] (timeouts) ◄─── shared memory ───     slot = (start time, task_no | pos + 1)
                                                       result = func(item)
                                ◄── ITEM / FAIL ────     (only when the chunk has a timeout)
                                ◄── DONE ──────────  summary (+ all results when not streamed)
    b"" (stop) ──────────────────────────────────►   exit 0

Wire format. Parent → worker, one frame per chunk: ``CONTROL_LEN`` (length of the control part),
the control tuple pickled (:data:`Control`), then the items pickled. The empty frame means stop.
Worker → parent: ``HEADER`` (kind, task number, position) then the body pickled. Pickling is
protocol 5, plain :mod:`pickle` first and cloudpickle when plain pickle fails (lambdas in results).

The shared ``slot`` (two int64 in shared memory) tells the parent what runs *now*, without a
message: ``slot[1]`` is ``time.monotonic_ns()`` when the item started (a system-wide clock on Linux,
macOS and Windows; per item only in chunks with an item timeout, the only reader of it, else when the
chunk started) and ``slot[0]`` is ``task_no << 32 | (pos + 1)`` (``pos + 1 == 0``: decoding the
chunk). The start is written before the position, and the parent reads them in the other order and
re-reads ``slot[0]``, so it never pairs a new item with an old start.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import cloudpickle

from amorsize._native import blas_above, stop_openblas_threads

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

__all__ = [
    "CHUNK_ERROR",
    "CONTROL_LEN",
    "DONE",
    "FAIL",
    "HEADER",
    "ITEM",
    "READY",
    "dumps",
    "encode_error",
    "main",
]

# Message kinds, worker → parent.
READY = 0  #: body: the worker's pid
ITEM = 1  #: body: one result (streamed chunks)
FAIL = 2  #: body: an encoded error (:func:`encode_error`) for the item at ``pos`` (streamed chunks)
DONE = 3  #: body: (results or None when streamed, failures, n_done, duration, cpu_time)
CHUNK_ERROR = 4  #: body: an encoded error that fails the whole chunk (it could not be decoded)

#: kind (1 byte), task number (uint32), item position (int32, -1 when none).
HEADER = struct.Struct("<BIi")
#: Length in bytes of the pickled control tuple that opens a task frame.
CONTROL_LEN = struct.Struct("<I")

#: (function key, function payload or None when the worker has it, keys to forget, chunk start,
#: stop_on_error, stream results per item).
Control = tuple[str, bytes | None, tuple[str, ...], int, bool, bool]
#: (pickled exception or None, type name, message, formatted traceback).
EncodedError = tuple[bytes | None, str, str, str]

#: Seconds between two checks that the parent is still alive. An orphaned worker (the parent was
#: killed) exits within this delay even while an item runs; the check is one ``getppid`` call.
ORPHAN_CHECK_INTERVAL = 1.0

#: Environment variables read by BLAS / OpenMP libraries when they load (OpenBLAS, MKL, OpenMP,
#: Apple Accelerate, numexpr); threadpoolctl covers the libraries already loaded.
BLAS_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

_MASK = 0xFFFFFFFF


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` with protocol 5, plain pickle first and cloudpickle if that fails.

    Raises:
        Exception: whatever cloudpickle raises when ``obj`` cannot be pickled at all.
    """
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:
        return cloudpickle.dumps(obj, protocol=5)  # type: ignore[no-any-return]


def encode_error(error: BaseException) -> EncodedError:
    """Turn an exception into plain data that always pickles.

    Args:
        error: the exception, with its traceback.

    Returns:
        (the exception pickled by cloudpickle, or None when it cannot be; its type name; its message;
        the formatted traceback).
    """
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        blob: bytes | None = cloudpickle.dumps(error, protocol=5)
    except Exception:
        blob = None
    try:
        message = str(error)
    except Exception:
        message = f"<str() of the {type(error).__name__} failed>"
    return blob, type(error).__qualname__, message, text


def _frame(kind: int, task_no: int, pos: int, body: Any) -> memoryview:
    buffer = io.BytesIO()
    buffer.write(HEADER.pack(kind, task_no, pos))
    try:
        pickle.dump(body, buffer, protocol=5)
    except Exception:
        buffer.seek(HEADER.size)
        buffer.truncate()
        cloudpickle.dump(body, buffer, protocol=5)
    return buffer.getbuffer()


def _unpicklable_result(index: int, result: Any, error: BaseException) -> pickle.PicklingError:
    kind = type(result)
    failure = pickle.PicklingError(
        f"the result of item {index} is a {kind.__module__}.{kind.__qualname__}, which cannot be "
        f"pickled to send it back from the worker process ({type(error).__name__}: {error}); "
        "return plain data instead (convert it to built-in types or numpy arrays), "
        "or run this function on threads"
    )
    failure.__cause__ = error
    return failure


@dataclass(frozen=True)
class ForkedBlas:
    """Under fork: the parent's BLAS/OpenMP libraries above the workers' cap, found once for all children.

    A forked child has the parent's libraries loaded at the same addresses, so the parent's
    threadpoolctl controller works in it as it is: the child neither imports threadpoolctl nor
    scans its libraries (measured: 10–12 ms of CPU in each new worker with NumPy loaded, while the
    parent forks the next one on the same cores).

    Attributes:
        controller: the libraries to cap, or None when none runs above the cap.
    """

    controller: ThreadpoolController | None


def forked_blas(blas_threads: int) -> ForkedBlas:
    """What a child forked now inherits above ``blas_threads`` (call in the parent, just before forking)."""
    return ForkedBlas(blas_above(blas_threads))


def _limit_blas(blas_threads: int | None, forked: ForkedBlas | None = None) -> None:
    """Cap BLAS/OpenMP threads in this process: environment for libraries loaded later, threadpoolctl now.

    Setting OpenBLAS's thread count restarts its thread pool when it is down, as it is in every
    forked child (OpenBLAS shuts its threads down before each fork), and a restarted helper spins
    ~100 ms before it sleeps (measured: ~0.1 s of CPU in every new worker, taken from the other
    workers). So once OpenBLAS is capped here, its pool is shut down again
    (:func:`~amorsize._native.stop_openblas_threads`): at one thread OpenBLAS never restarts it,
    above one the first call that uses threads does. Libraries at the cap already are left alone.

    Args:
        blas_threads: the cap, or None to leave everything alone.
        forked: under fork, what the parent found (:func:`forked_blas`); None: look here.
    """
    if blas_threads is None:
        return
    for name in BLAS_ENV_VARS:
        os.environ[name] = str(blas_threads)
    controller = blas_above(blas_threads) if forked is None else forked.controller
    if controller is None:
        return
    controller.limit(limits=blas_threads)  # stays in force: never restored
    stop_openblas_threads(controller)


def _watch_parent() -> None:
    """Exit when the parent goes away (this process is then re-parented, ``getppid`` changes)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(ORPHAN_CHECK_INTERVAL)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="amorsize-orphan-watch", daemon=True).start()


class _Chunk:
    """Running one decoded chunk and reporting it (one instance per chunk)."""

    def __init__(
        self,
        conn: Connection,
        slot: Any,
        task_no: int,
        start: int,
        stop_on_error: bool,
        stream: bool,
    ) -> None:
        self.conn = conn
        self.slot = slot
        self.task_no = task_no
        self.start = start
        self.stop_on_error = stop_on_error
        self.stream = stream

    def run(self, func: Callable[[Any], Any], items: Sequence[Any]) -> tuple[list[Any], list[Any], int]:
        """Call ``func`` on each item; return (results, failures, n_done), streaming if asked."""
        if not self.stream:
            return self._run_untimed(func, items)
        slot, conn = self.slot, self.conn
        tag = self.task_no << 32
        n_done = 0
        for pos, item in enumerate(items):  # timed: each item's start, each result streamed at once
            slot[1] = time.monotonic_ns()
            slot[0] = tag | (pos + 1)
            n_done = pos + 1
            try:
                result = func(item)
            except BaseException as error:  # SIGINT is ignored here, so this is the item's own doing
                encoded = encode_error(error)
                del error
                conn.send_bytes(_frame(FAIL, self.task_no, pos, encoded))
                if self.stop_on_error:
                    break
                continue
            try:
                message = _frame(ITEM, self.task_no, pos, result)
            except Exception as error:
                encoded = encode_error(_unpicklable_result(self.start + pos, result, error))
                conn.send_bytes(_frame(FAIL, self.task_no, pos, encoded))
                if self.stop_on_error:
                    break
                continue
            conn.send_bytes(message)
        return [], [], n_done

    def _run_untimed(
        self, func: Callable[[Any], Any], items: Sequence[Any]
    ) -> tuple[list[Any], list[Any], int]:
        """:meth:`run` for a chunk without an item timeout: only the position goes to the slot.

        Nobody reads an item's start time without a timeout, so this loop skips the clock: ~80 ns
        per item of bookkeeping instead of ~200–350 (3 % of a 10 µs item).
        """
        slot = self.slot
        first = (self.task_no << 32) | 1  # slot[0] for position 0
        results: list[Any] = []
        append = results.append
        failures: list[tuple[int, bytes | None, str, str, str]] = []
        where = first - 1
        for where, item in enumerate(items, first):
            slot[0] = where
            try:
                append(func(item))
            except BaseException as error:  # SIGINT is ignored here, so this is the item's own doing
                encoded = encode_error(error)
                del error
                append(None)
                failures.append((where - first, *encoded))
                if self.stop_on_error:
                    break
        return results, failures, where - first + 1

    def report(
        self, results: list[Any], failures: list[Any], n_done: int, duration: float, cpu: float
    ) -> None:
        """Send the DONE message; results that cannot be pickled become failures of their item."""
        if self.stream:
            self.conn.send_bytes(_frame(DONE, self.task_no, -1, (None, [], n_done, duration, cpu)))
            return
        try:
            message = _frame(DONE, self.task_no, -1, (results, failures, n_done, duration, cpu))
        except Exception:
            for pos, result in enumerate(results):
                try:
                    dumps(result)
                except Exception as error:
                    results[pos] = None
                    encoded = encode_error(_unpicklable_result(self.start + pos, result, error))
                    failures.append((pos, *encoded))
            failures.sort(key=lambda failure: failure[0])
            message = _frame(DONE, self.task_no, -1, (results, failures, n_done, duration, cpu))
        self.conn.send_bytes(message)


def main(
    tasks: Connection, conn: Connection, slot: Any, blas_threads: int | None, forked: ForkedBlas | None = None
) -> None:
    """Serve chunks from ``tasks`` until told to stop or the parent goes away.

    Args:
        tasks: the read end of this worker's task pipe.
        conn: the write end of this worker's result pipe.
        slot: two shared int64 (see the module docstring).
        blas_threads: cap on BLAS/OpenMP threads for this worker's lifetime, or None.
        forked: under fork, the parent's libraries above the cap (:func:`forked_blas`); None: this
            worker looks for itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _limit_blas(blas_threads, forked)
    _watch_parent()
    functions: dict[str, Callable[[Any], Any]] = {}
    conn.send_bytes(_frame(READY, 0, -1, os.getpid()))
    task_no = 0
    while True:
        try:
            data = tasks.recv_bytes()
        except (EOFError, OSError):
            return
        if not data:
            return
        task_no += 1
        slot[1] = time.monotonic_ns()
        slot[0] = task_no << 32
        started = time.perf_counter()
        cpu_started = time.process_time()
        view = memoryview(data)
        try:
            (control_len,) = CONTROL_LEN.unpack_from(view)
            control: Control = pickle.loads(view[CONTROL_LEN.size : CONTROL_LEN.size + control_len])
            key, payload, forget, start, stop_on_error, stream = control
            for old in forget:
                functions.pop(old, None)
            func = functions.get(key)
            if func is None:
                if payload is None:
                    raise RuntimeError(f"worker {os.getpid()} was sent no function for key {key}")
                n_modules = len(sys.modules)
                func = pickle.loads(payload)
                functions[key] = func
                if len(sys.modules) != n_modules:  # its imports may have loaded a BLAS library
                    _limit_blas(blas_threads)
            items = pickle.loads(view[CONTROL_LEN.size + control_len :])
        except BaseException as error:
            conn.send_bytes(_frame(CHUNK_ERROR, task_no, -1, encode_error(error)))
            continue
        chunk = _Chunk(conn, slot, task_no, start, stop_on_error, stream)
        results, failures, n_done = chunk.run(func, items)
        del items
        chunk.report(
            results, failures, n_done, time.perf_counter() - started, time.process_time() - cpu_started
        )
