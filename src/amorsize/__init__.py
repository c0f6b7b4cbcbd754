"""Amorsize: decide how a function should run over data, then run it that way, reliably.

>>> from amorsize import execute, optimize
>>> optimize(abs, range(100)).executor
'serial'
>>> execute(abs, [-3, 4])
[3, 4]
"""

from amorsize.api import execute, imap, optimize, optimize_streaming, process_in_batches
from amorsize.core.types import Machine, MachineCosts, Plan, Prediction, Profile
from amorsize.errors import (
    AmorsizeError,
    CheckpointMismatchError,
    CircuitOpenError,
    ConfigurationError,
    ExecutionError,
    ItemError,
    ItemTimeoutError,
    MissingExtraError,
    SamplingError,
    StoreError,
    WorkerDiedError,
)
from amorsize.measure.machine import probe_machine
from amorsize.results import Diagnostics, OptimizationResult, StreamingOptimizationResult
from amorsize.run.hooks import ProgressBar, RunHooks
from amorsize.run.report import RunReport

__version__ = "0.2.0"

__all__ = [
    "AmorsizeError",
    "CheckpointMismatchError",
    "CircuitOpenError",
    "ConfigurationError",
    "Diagnostics",
    "ExecutionError",
    "ItemError",
    "ItemTimeoutError",
    "Machine",
    "MachineCosts",
    "MissingExtraError",
    "OptimizationResult",
    "Plan",
    "Prediction",
    "Profile",
    "ProgressBar",
    "RunHooks",
    "RunReport",
    "SamplingError",
    "StoreError",
    "StreamingOptimizationResult",
    "WorkerDiedError",
    "__version__",
    "execute",
    "imap",
    "optimize",
    "optimize_streaming",
    "probe_machine",
    "process_in_batches",
]
