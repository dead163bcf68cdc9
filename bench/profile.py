"""Where the service's Python time goes under one scenario's load: the data set loaded as
``make bench`` loads it, the service started as the harness starts it, wrk driving it, and
py-spy sampling every uvicorn worker meanwhile.

    python -m bench.profile [--scenario earn|read] [--members N] [--seconds S] [--top N]

py-spy is not a dependency of the project (``.venv/bin/pip install py-spy``) and needs to be
allowed to read other processes (root, or ``ptrace_scope`` 0). The raw samples are written
to ``.loyalty/bench/work/profile-<scenario>.txt`` (collapsed stacks: flamegraph tools read
them); the tables printed are the functions with the most samples on their own (self) and
with their callees (total), as shares of all samples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.harness import DATA_DIR, WORK, say
from bench.http import find_wrk, running_service, wrk
from bench.run import drop_data_set, prepare
from loyalty.core.embedded import service_urls
from loyalty.core.settings import load_settings

SCRIPTS = {"earn": "earn.lua", "read": "read.lua"}


def _children(parent: int) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == parent:
                found.append(int(pid))
    return found


def _service_pid() -> int:
    """The ``loyalty serve`` this harness started (uvicorn's supervisor of the workers)."""
    for pid in _children(os.getpid()):
        with contextlib.suppress(OSError):
            if b"cli.main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    sys.exit("bench.profile: the service's process was not found")


def _frame_name(frame: str) -> str:
    # A collapsed frame reads "function (path/to/file.py:line)": keep the function and file.
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})" if where else name


def summarise(raw: Path, top: int) -> None:
    """The functions with the most samples on their own and with what they call."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        samples += count
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    if not samples:
        sys.exit("bench.profile: py-spy recorded no samples")
    for title, counter in (("self", own), ("total (with callees)", total)):
        print(f"\n{title}: {samples:,} samples")
        for name, count in counter.most_common(top):
            print(f"  {100 * count / samples:5.1f} %  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCRIPTS), default="earn")
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true",
                        help="sample C frames too (asyncpg's and the interpreter's)")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("bench.profile: py-spy not found; install it with .venv/bin/pip install py-spy")
    settings = load_settings()
    script = SCRIPTS[args.scenario]
    raw = WORK / f"profile-{args.scenario}.txt"
    raw.unlink(missing_ok=True)
    with service_urls(settings.database_url, settings.redis_url, DATA_DIR,
                      need_redis=True) as urls:
        prepared = asyncio.run(prepare(urls.database_url, args.members))
        env = {"BENCH_TERMINAL_KEY": prepared["terminal_key"], "BENCH_RUN": "P"}
        with running_service(prepared["dsn"], urls.redis_url, os.cpu_count() or 1,
                             pool=18) as base:
            service = _service_pid()
            say(f"{args.scenario}: warming up")
            wrk(find_wrk(), base, script, seconds=3, connections=32, threads=2,
                env={**env, "BENCH_RUN": "PW"})
            say(f"{args.scenario}: {args.seconds}s under wrk, py-spy on {service}"
                f" and its workers {_children(service)}")
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(service), "--subprocesses", "--format",
                 "raw", "--rate", "250", "--duration", str(args.seconds),
                 "--output", str(raw),
                 # Native frames need the process paused while they are read.
                 "--native" if args.native else "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1)
            result = wrk(find_wrk(), base, script, seconds=args.seconds, connections=32,
                         threads=2, env=env)
            _, complaint = spy.communicate(timeout=args.seconds + 60)
            if spy.returncode != 0 or not raw.exists():
                sys.exit(f"bench.profile: py-spy failed: {complaint.decode()[-500:]}")
            say(f"{args.scenario}: {result['rps']:,.0f} req/s under the profiler")
        asyncio.run(drop_data_set(urls.database_url))
    summarise(raw, args.top)
    print(f"\nraw samples: {raw}")


if __name__ == "__main__":
    main()
