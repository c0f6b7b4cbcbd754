"""A real run SIGKILLed mid-way, then resumed in a new process: nothing committed runs twice.

The script below runs ``execute(..., checkpoint=path)`` over 10 ms items on two process workers,
with a dry run first (its results are committed too). Each call appends its item to a file. The test
kills the script's whole process group once enough results are committed, reads what the
checkpoint holds, runs the script again, and checks, per item:

- an item whose result was committed before the kill was called exactly once, in all;
- an item called twice was called once before the kill and its result was not committed (it was in
  flight, or finished in a worker without the parent having committed it yet);
- every item was called, the output is complete and in order, and the checkpoint is gone.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import resilience_funcs as funcs

from amorsize.resilience.checkpoint import CheckpointManager

HERE = Path(__file__).resolve().parent
N = 240

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {here!r})
    import resilience_funcs as funcs
    from amorsize import execute

    if __name__ == "__main__":
        calls, checkpoint, out, kind = sys.argv[1:5]
        items = [(calls, x, 0.01) for x in range({n})]
        data = iter(items) if kind == "generator" else items
        results = execute(funcs.slow_square, data, checkpoint=checkpoint, executor="processes", n_jobs=2)
        with open(out, "w") as handle:
            json.dump(results, handle)
    """
)


def committed_count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as raw:
            (count,) = raw.execute("SELECT COALESCE(SUM(count), 0) FROM checkpoint_results").fetchone()
        return int(count)
    except sqlite3.Error:  # not created yet, or mid-migration
        return 0


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["list", "generator"])
def test_sigkill_then_resume_runs_each_committed_item_once(tmp_path: Path, kind: str) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(here=str(HERE), n=N))
    calls, checkpoint, out = (
        str(tmp_path / "calls.txt"),
        tmp_path / "state" / "job.sqlite3",
        tmp_path / "out.json",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, str(script), calls, str(checkpoint), str(out), kind]

    first = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while committed_count(checkpoint) < N // 3:
            assert first.poll() is None, "the first run ended before it could be killed"
            assert time.monotonic() < deadline, "the first run committed too little in 60 s"
            time.sleep(0.01)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the parent and its workers, as a node failure would
        first.wait(10)
    time.sleep(0.2)  # let the kernel reap the workers; none can write after SIGKILL
    before = Counter(int(x) for x in funcs.lines(calls))
    state = CheckpointManager().load_checkpoint(checkpoint)
    assert state is not None
    committed = set(state.completed_indices)
    assert N // 3 <= len(committed) < N
    assert committed <= set(before), "a committed result came from a call that happened"

    second = subprocess.run(command, env=env, timeout=60, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert json.loads(out.read_text()) == [x * x for x in range(N)]
    total = Counter(int(x) for x in funcs.lines(calls))
    assert set(total) == set(range(N))
    assert all(total[x] == 1 for x in committed), "a committed item ran again"
    twice = {x for x, n in total.items() if n > 1}
    assert all(total[x] == 2 and before[x] == 1 and x not in committed for x in twice)
    assert not checkpoint.exists(), "the checkpoint file is removed once the run completed"
