"""The command line's Dask flags, against a real loopback LocalCluster.

``distributed`` is imported only inside the fixture, and what importing it changes process-wide
(tblib's exception reducers in ``copyreg``, a nanny's environment) is restored afterwards, so the
other tests see a process that never imported Dask (see tests/run/test_contract.py).
"""

from __future__ import annotations

import copyreg
import json
import logging
import os
from collections.abc import Iterator

import pytest

from amorsize.cli import EXIT_USAGE, main


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A one-worker, two-thread in-process cluster on 127.0.0.1; yields its address."""
    pickling, environ = dict(copyreg.dispatch_table), dict(os.environ)
    distributed = pytest.importorskip("distributed")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    try:
        yield from _cluster(distributed)
    finally:
        for table, saved in ((copyreg.dispatch_table, pickling), (os.environ, environ)):
            table.clear()
            table.update(saved)


def _cluster(distributed: object) -> Iterator[str]:
    with distributed.LocalCluster(  # type: ignore[attr-defined]
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.mark.timeout(120)
def test_execute_on_a_scheduler(scheduler: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["execute", "operator:neg", "--data-range", "50", "--scheduler", scheduler, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    assert payload["results"] == [-x for x in range(50)]


@pytest.mark.timeout(120)
def test_forced_dask_executor_runs_on_the_cluster(scheduler: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "execute",
            "operator:neg",
            "--data-range",
            "3000",
            "--scheduler",
            scheduler,
            "--executor",
            "dask",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["plan"]["executor"] == "dask"


def test_scheduler_with_local_backend_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["optimize", "operator:neg", "--data-range", "5", "--backend", "local", "--scheduler", "tcp://x:1"]
    )
    _, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert err.count("\n") == 1 and "--scheduler" in err
