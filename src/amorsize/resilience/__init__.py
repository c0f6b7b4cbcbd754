"""Resilience: retry, a circuit breaker and a rate limit for the whole run, checkpoints, dead letters.

``execute``/``imap`` take these as options (``retry=``, ``circuit_breaker=``, ``rate_limit=``,
``checkpoint=``, ``on_error="dlq"``); the names below are also exported from :mod:`amorsize`.
"""

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
    DLQSummary,
    replay_failed_items,
)
from amorsize.resilience.ratelimit import RateLimitPolicy, TokenBucket
from amorsize.resilience.retry import RetryingFunction, RetryPolicy, retries_of, with_retry

__all__ = [
    "CheckpointManager",
    "CheckpointPolicy",
    "CheckpointState",
    "CircuitBreaker",
    "CircuitBreakerPolicy",
    "CircuitState",
    "DLQFormat",
    "DLQPolicy",
    "DLQSummary",
    "DeadLetterEntry",
    "DeadLetterQueue",
    "RateLimitPolicy",
    "RetryPolicy",
    "RetryingFunction",
    "TokenBucket",
    "get_pending_items",
    "merge_results",
    "replay_failed_items",
    "retries_of",
    "with_circuit_breaker",
    "with_retry",
]
