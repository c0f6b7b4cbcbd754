"""The native thread pools of this process (BLAS/OpenMP): what runs above a cap, and OpenBLAS's helper.

Shared by the dry run (:mod:`amorsize.measure.sampler`), the API's threaded runs and the process
workers (:mod:`amorsize.run._worker`); light to import (threadpoolctl is imported when used).

OpenBLAS (pthreads) keeps a helper thread spinning ~100 ms after every call it ran on several
threads, and after its pool was shut down (as before every fork) it starts the pool again when its
thread count is next set. A spinning helper takes a core from whatever runs next: a threaded run,
a probe, a new worker. :func:`stop_openblas_threads` shuts the pool down; it is safe only while no
other thread is inside a BLAS call, which :func:`only_caller_runs_user_code` checks for the threads
Python knows of.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

__all__ = [
    "RUNNING_USER_CODE",
    "blas_above",
    "blas_controller",
    "blas_libraries_mapped",
    "blas_modules_loaded",
    "limited_quietly",
    "only_caller_runs_user_code",
    "quiet_openblas",
    "stop_openblas_threads",
]

#: Threads Amorsize starts that never call user code (an idle thread backend's threads wait for a
#: chunk; :data:`RUNNING_USER_CODE` counts those that run one).
_NO_USER_CODE = (
    "amorsize-process-manager",
    "amorsize-sender-",
    "amorsize-thread-watchdog",
    "amorsize-thread:",
    "amorsize-gil-canary",
    "amorsize-head-watch",
    "amorsize-calibrate",
    "amorsize-dask-manager",
    "amorsize-store-writer",
)

#: Plumbing threads of process executors (``concurrent.futures`` and loky's manager thread, a
#: ``multiprocessing`` queue's feeder): they move pickles and processes and call no user code,
#: save a future's done-callbacks. A joblib call leaves loky's alive for its next call.
_PLUMBING = ("ExecutorManagerThread", "QueueFeederThread")


class _RunningUserCode:
    """Counts the Amorsize threads running a chunk of user code (``with RUNNING_USER_CODE:``).

    One shared instance, reentrant across threads: it keeps no state per ``with``. A class rather
    than a ``contextlib.contextmanager`` generator, which cost ~2 µs per chunk.
    """

    def __init__(self) -> None:
        self.count = 0  # chunks running now, abandoned ones included: their items run on until they return
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.count -= 1


#: Chunks of user code running now in Amorsize's threads (every thread backend of this process).
RUNNING_USER_CODE = _RunningUserCode()


def only_caller_runs_user_code() -> bool:
    """True when no thread of this process but the caller can be running user code right now.

    The caller is not an Amorsize thread, every other live Python thread is one of Amorsize's that
    never call user code (or a process executor's plumbing, :data:`_PLUMBING`), and no Amorsize
    thread runs a chunk (:data:`RUNNING_USER_CODE`). Native threads that Python does not know of
    are not seen.
    """
    current = threading.current_thread()
    if current.name.startswith(_NO_USER_CODE):
        return False
    for thread in threading.enumerate():
        if thread is not current and not thread.name.startswith((*_NO_USER_CODE, *_PLUMBING)):
            return False
    with RUNNING_USER_CODE.lock:
        return RUNNING_USER_CODE.count == 0


def blas_modules_loaded() -> bool:
    """Whether a module that loads a BLAS/OpenMP library is imported (NumPy, SciPy, PyTorch, scikit-learn).

    A check of ``sys.modules``, free where threadpoolctl's import and scan of the loaded libraries
    cost 0.4–8 ms: without these modules, the libraries are not looked for.
    """
    return any(name in sys.modules for name in ("numpy", "scipy", "torch", "sklearn"))


#: File names of the libraries threadpoolctl controls start with one of these (the
#: ``filename_prefixes`` of its OpenBLAS, BLIS, FlexiBLAS, MKL and OpenMP controllers, 3.x).
BLAS_LIBRARY_PREFIXES = (
    "libopenblas",
    "libscipy_openblas",
    "openblas",
    "libblas",
    "libblis",
    "libflexiblas",
    "libmkl_rt",
    "mkl_rt",
    "libiomp",
    "libgomp",
    "libomp",
    "vcomp",
)
_MAPPED_BLAS = re.compile(
    rb"/(?:" + b"|".join(re.escape(p.encode()) for p in BLAS_LIBRARY_PREFIXES) + rb")[^/\n]*$", re.MULTILINE
)
_MAPS = "/proc/self/maps"


def blas_libraries_mapped() -> bool | None:
    """Whether a library threadpoolctl could control is mapped into this process (Linux).

    Reads ``/proc/self/maps`` (0.2–0.5 ms) where threadpoolctl's import and first scan of the loaded
    libraries cost ~3.5 ms: in each process's first pool, and in each spawned worker.

    Returns:
        True or False; None where the maps cannot be read (not Linux): then look with threadpoolctl.
    """
    try:
        with open(_MAPS, "rb") as maps:
            text = maps.read()
    except OSError:
        return None
    return _MAPPED_BLAS.search(text) is not None


class _LoadCounter:
    """How many shared objects this process has loaded and unloaded so far (``dl_iterate_phdr``).

    The C library keeps the two counts (``dlpi_adds``, ``dlpi_subs``; glibc and musl) and hands
    them to a ``dl_iterate_phdr`` callback: one call that stops at the first object, ~1 µs. Where
    there is no such function (macOS, Windows) or it does not report them, :meth:`read` is None.
    Each call gets its own result list (the callback's ``data``): no lock that a fork could copy
    while held.
    """

    def __init__(self) -> None:
        self._iterate: Any = None
        self._callback: Any = None
        try:
            import ctypes

            class Info(ctypes.Structure):  # struct dl_phdr_info, up to dlpi_subs
                _fields_ = (
                    ("addr", ctypes.c_void_p),
                    ("name", ctypes.c_char_p),
                    ("phdr", ctypes.c_void_p),
                    ("phnum", ctypes.c_uint16),
                    ("adds", ctypes.c_ulonglong),
                    ("subs", ctypes.c_ulonglong),
                )

            callback_type = ctypes.CFUNCTYPE(
                ctypes.c_int, ctypes.POINTER(Info), ctypes.c_size_t, ctypes.py_object
            )
            iterate = ctypes.CDLL(None).dl_iterate_phdr
            iterate.argtypes = (callback_type, ctypes.py_object)
            iterate.restype = ctypes.c_int
            full = ctypes.sizeof(Info)

            def first(info: Any, size: int, out: list[tuple[int, int]]) -> int:
                if size >= full:
                    contents = info.contents
                    out.append((contents.adds, contents.subs))
                return 1  # stop: the counts are the same in every entry

            self._callback = callback_type(first)
            self._iterate = iterate
        except (ImportError, OSError, AttributeError):
            pass

    def read(self) -> tuple[int, int] | None:
        """``(loaded, unloaded)`` so far, or None where the C library does not tell."""
        if self._iterate is None:
            return None
        out: list[tuple[int, int]] = []
        self._iterate(self._callback, out)
        return out[0] if out else None


_COUNTER: _LoadCounter | None = None
#: The last scan: the load counts it was made at, and its controller (None: no library).
_SCANNED: tuple[tuple[int, int], ThreadpoolController | None] | None = None


def _load_counts() -> tuple[int, int] | None:
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = _LoadCounter()
    return _COUNTER.read()


def blas_controller(*, blind: bool = True) -> ThreadpoolController | None:
    """A threadpoolctl controller of this process's BLAS/OpenMP libraries; None when none is loaded.

    Looking costs 0.4–1.5 ms with NumPy loaded (``/proc/self/maps``, then threadpoolctl's scan of
    the loaded libraries; where no such library is mapped, threadpoolctl is not even imported). The
    answer is kept while no shared object was loaded or unloaded since (:class:`_LoadCounter`), so
    a run that asks several times pays once; the libraries' thread counts are read live each time.

    Args:
        blind: where the maps cannot be read, scan anyway (True) or answer None (False).

    Returns:
        The controller (shared: do not change it), or None.
    """
    global _SCANNED
    counts = _load_counts()
    scanned = _SCANNED
    if counts is not None and scanned is not None and scanned[0] == counts:
        return scanned[1]
    controller = None
    mapped = blas_libraries_mapped()
    if mapped is None and not blind:
        return None  # not kept: a caller that looks blind may come next
    if mapped is not False:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
        if not controller.lib_controllers:
            controller = None
    if counts is not None:
        _SCANNED = (counts, controller)
    return controller


def blas_above(blas_threads: int) -> ThreadpoolController | None:
    """This process's BLAS/OpenMP libraries, when one of them runs more than ``blas_threads`` threads.

    Found by :func:`blas_controller` (a scan made before is reused while no library was loaded).

    Returns:
        A threadpoolctl controller to limit them with, or None when every one is at the cap already.
    """
    controller = blas_controller()
    if controller is not None and any(lib.num_threads > blas_threads for lib in controller.lib_controllers):
        return controller
    return None


def stop_openblas_threads(controller: ThreadpoolController) -> None:
    """Shut down the thread pools of the OpenBLAS (pthreads) libraries ``controller`` holds.

    ``blas_thread_shutdown_`` is the function OpenBLAS registers to run before every fork; it is
    safe only while no other thread of the process is inside a BLAS call: in a worker that has not
    yet run a task, or where :func:`only_caller_runs_user_code` (see :func:`quiet_openblas`).
    OpenBLAS starts the pool again when a call needs threads. Builds that do not export it are
    left as they are.
    """
    for lib in controller.lib_controllers:
        if lib.internal_api != "openblas" or getattr(lib, "threading_layer", None) != "pthreads":
            continue
        shutdown = getattr(lib.dynlib, "blas_thread_shutdown_", None)
        if shutdown is not None:
            shutdown()


def quiet_openblas(controller: ThreadpoolController) -> bool:
    """Stop OpenBLAS's spinning helper (:func:`stop_openblas_threads`) if no other thread can call BLAS.

    Call it with the libraries capped, so that the pool is not needed until the cap is lifted.

    Returns:
        Whether the pools were shut down.
    """
    if not only_caller_runs_user_code():
        return False
    stop_openblas_threads(controller)
    return True


@contextlib.contextmanager
def limited_quietly(controller: ThreadpoolController, limit: int) -> Iterator[bool]:
    """Limit ``controller``'s libraries to ``limit`` threads, OpenBLAS's helper stopped at both ends.

    On entry the helper left spinning by earlier uncapped calls is stopped (:func:`quiet_openblas`).
    Lifting the limit on exit sets the thread count, which restarts OpenBLAS's pool, and its helper
    spun ~100 ms of a core after every threaded run (the next call's dry run read 5 ms sleeps as
    97 % CPU through it): it is stopped again, on the same condition.

    Yields:
        Whether the helper was stopped on entry (no other thread can be in a BLAS call).
    """
    try:
        with controller.limit(limits=limit):
            yield quiet_openblas(controller)
    finally:
        quiet_openblas(controller)
