"""The embedded PostgreSQL, started by several processes at once on a new data directory: what
`make test`'s workers do on a fresh clone, and `make run` beside a `loyalty` command. pgserver
makes the cluster's directory without a lock, and each process would create the database."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

_START = """
import sys
from pathlib import Path
from loyalty.core.embedded import embedded_postgres
with embedded_postgres(Path(sys.argv[1])) as url:
    print(url)
"""


def _start(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _START, str(data_dir)], cwd=ROOT,  # noqa: S603 - this interpreter and a constant script
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_start_waits_while_another_process_is_starting_the_cluster(tmp_path: Path) -> None:
    with (tmp_path / "postgres.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a process in the middle of starting it
        waiting = _start(tmp_path)
        time.sleep(2)
        assert waiting.poll() is None
        assert not (tmp_path / "postgres").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err[-2000:]
    assert out.startswith("postgresql://"), out


def test_processes_starting_one_new_cluster_at_once_all_get_it(tmp_path: Path) -> None:
    starting = [_start(tmp_path) for _ in range(3)]
    for process in starting:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
        assert out.startswith("postgresql://"), out
