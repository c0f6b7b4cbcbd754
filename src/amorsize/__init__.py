"""Amorsize: decide how a function should run over data, then run it that way, reliably.

>>> from amorsize import execute, optimize
>>> optimize(abs, range(100)).executor
'serial'
>>> execute(abs, [-3, 4])
[3, 4]
"""

from amorsize.api import execute, imap, optimize, optimize_streaming, process_in_batches
from amorsize.config import ConfigMachineWarning, SavedConfig, load_config, save_config
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
from amorsize.measure.cluster import probe_cluster
from amorsize.measure.machine import probe_machine
from amorsize.resilience.checkpoint import (
    CheckpointManager,
    CheckpointPolicy,
    CheckpointState,
    get_pending_items,
    merge_results,
)
from amorsize.resilience.circuit import (
    CircuitBreaker,
    CircuitBreakerPolicy,
    CircuitState,
    with_circuit_breaker,
)
from amorsize.resilience.dlq import (
    DeadLetterEntry,
    DeadLetterQueue,
    DLQFormat,
    DLQPolicy,
    replay_failed_items,
)
from amorsize.resilience.ratelimit import RateLimitPolicy
from amorsize.resilience.retry import RetryPolicy, with_retry
from amorsize.results import Diagnostics, OptimizationResult, StreamingOptimizationResult
from amorsize.run.hooks import ProgressBar, RunHooks
from amorsize.run.report import RunReport
from amorsize.tuning import TuneResult, tune
from amorsize.validation import ValidationResult, quick_validate, validate_optimization

__version__ = "0.2.0"

__all__ = [
    "AmorsizeError",
    "CheckpointManager",
    "CheckpointMismatchError",
    "CheckpointPolicy",
    "CheckpointState",
    "CircuitBreaker",
    "CircuitBreakerPolicy",
    "CircuitOpenError",
    "CircuitState",
    "ConfigMachineWarning",
    "ConfigurationError",
    "DLQFormat",
    "DLQPolicy",
    "DeadLetterEntry",
    "DeadLetterQueue",
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
    "RateLimitPolicy",
    "RetryPolicy",
    "RunHooks",
    "RunReport",
    "SamplingError",
    "SavedConfig",
    "StoreError",
    "StreamingOptimizationResult",
    "TuneResult",
    "ValidationResult",
    "WorkerDiedError",
    "__version__",
    "execute",
    "get_pending_items",
    "imap",
    "load_config",
    "merge_results",
    "optimize",
    "optimize_streaming",
    "probe_cluster",
    "probe_machine",
    "process_in_batches",
    "quick_validate",
    "replay_failed_items",
    "save_config",
    "tune",
    "validate_optimization",
    "with_circuit_breaker",
    "with_retry",
]
