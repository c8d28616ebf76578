"""A worker node of a multi-node Ray cluster dies under load (``tests/nodes/scenario.py``).

The scenario runs in a subprocess: a process has one Ray driver, and this one may later
hold the test session's cluster. It gets a PostgreSQL database of its own and a Redis key
prefix inside the session's (removed with it), and prints the kill, the time to recover
and each invariant check; pytest's ``-rP`` shows them in the summary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.nodes.scenario import PREFIX, RETRYABLE

pytestmark = pytest.mark.fault

ROOT = Path(__file__).parents[2]
# The scenario takes about a minute on 2 cores; this only stops a hung one.
TIMEOUT_S = 300


def test_shards_of_a_dead_node_come_back_elsewhere_and_nothing_acknowledged_is_lost(
    tmp_path: Path, node_database: str, redis_url: str, session_prefix: str
) -> None:
    result_file = tmp_path / "result.json"
    # Ray's unix sockets need a short path; removed here even if the scenario is killed.
    ray_tmp = tempfile.mkdtemp(prefix="fn-", dir="/tmp")
    cmd = [
        sys.executable,
        "-m",
        "tests.nodes.scenario",
        "--postgres-url", node_database,
        "--redis-url", redis_url,
        "--redis-prefix", f"{session_prefix}nodes:",
        "--data-dir", str(tmp_path / "data"),
        "--json-out", str(result_file),
        "--ray-tmp", ray_tmp,
    ]  # fmt: skip
    # The scenario sets up Ray auth and addresses of its own.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"}
    }
    # A session of its own: on a time-out, the scenario and every Ray process it started
    # are stopped together.
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the scenario did not finish in {TIMEOUT_S} s:\n{output[-6000:]}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    # Its own lines only: Ray also prints the dead raylet's last log lines on the driver.
    print("\n" + "\n".join(line for line in output.splitlines() if line.startswith(PREFIX)))
    assert result_file.exists(), f"no result (exit {proc.returncode}):\n{output[-6000:]}"
    result = json.loads(result_file.read_text())

    failed = [c for c in result["checks"] if not c["passed"]]
    assert failed == [], json.dumps(failed, indent=2)
    assert proc.returncode == 0, output[-6000:]
    assert result["passed"] is True
    killed = result["nodes"]["killed"]
    moved = result["kills"]["moved"]
    assert killed in result["nodes"]["workers"]
    assert moved, "the node that died held no shard"
    # Every moved shard recovered, and now runs on a worker that is still alive.
    assert set(result["recovery_s"]) == set(moved)
    assert all(0 < t < 60 for t in result["recovery_s"].values()), result["recovery_s"]
    survivors = set(result["nodes"]["workers"]) - {killed}
    assert {result["placement_after"][name] for name in moved} <= survivors
    assert result["nodes"]["head"] not in result["placement_after"].values()
    # Failures were seen, and each was of a retryable kind.
    assert set(result["retryable_failures"]) <= RETRYABLE
    assert result["gcs_port"] != 6379
