"""The scenarios through the service: the tools that drive them (wrk, and pgbench for the earn
reference), the service started as production runs it, and where the machine's CPU went."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

from bench.harness import BENCH, DATA_DIR, ROOT, WORK, Result, say

# -- tools -----------------------------------------------------------------------------------


def find_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        say(f"load generator: {found}")
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("wrk not found: installing Debian's wrk package (apt-get install -y wrk)")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit("bench: wrk is needed (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)")


def find_pgbench() -> str | None:
    with contextlib.suppress(ImportError):
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
        if bundled.exists():
            return str(bundled)
    return shutil.which("pgbench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the service -----------------------------------------------------------------------------


@contextlib.contextmanager
def running_service(dsn: str, redis_url: str, workers: int, pool: int) -> Any:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(
        LOYALTY_DATABASE_URL=dsn, LOYALTY_REDIS_URL=redis_url, LOYALTY_DATA_DIR=str(DATA_DIR),
        LOYALTY_PORT=str(port), LOYALTY_WORKERS=str(workers), LOYALTY_LOG_LEVEL="warning",
        LOYALTY_MIGRATE_ON_START="false", LOYALTY_DB_POOL_MIN=str(pool),
        LOYALTY_DB_POOL_MAX=str(pool),
        # One terminal and a few members send everything: the limits must not be what is
        # measured. They are still counted in Redis, as in production, with production's
        # allowance (decision 0020) unless BENCH_RATE_LIMIT_ALLOWANCE says otherwise (1: a
        # Redis call for every request, as before it).
        LOYALTY_RATE_LIMIT_PER_MINUTE="1000000000",
        # Measured work only: no job runs under a scenario, and webhooks are delivered only
        # by the worker the webhooks scenario starts (bench/webhooks.py), one for the service.
        LOYALTY_SCHEDULER="off", LOYALTY_WEBHOOKS_WORKER="off",
        LOYALTY_WEBHOOKS_ALLOW_PRIVATE="true",
    )
    # Settings a measurement compares (bench/README.md): each BENCH_X, when given, is LOYALTY_X.
    for setting in ("RATE_LIMIT_ALLOWANCE", "GROUP_COMMIT_WRITERS", "GROUP_COMMIT_MOST"):
        if f"BENCH_{setting}" in os.environ:
            env[f"LOYALTY_{setting}"] = os.environ[f"BENCH_{setting}"]
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], cwd=ROOT,
                               env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit("bench: the service did not start")
            time.sleep(0.2)
        say(f"service up on {base}: uvicorn, {workers} workers, pool of {pool} per worker")
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _cpu_snapshot() -> tuple[dict[str, int], int, int]:
    """CPU ticks used so far per process name, and the machine's total and idle ticks."""
    used: dict[str, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        group = "kernel" if name.startswith("kworker") else name
        used[group] = used.get(group, 0) + int(fields[11]) + int(fields[12])
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return used, sum(ticks), ticks[3] + ticks[4]


def cpu_share(before: tuple[dict[str, int], int, int],
              after: tuple[dict[str, int], int, int], seconds: float) -> dict[str, float]:
    """Where the machine's CPU went between two snapshots, in cores (Linux /proc)."""
    hz = os.sysconf("SC_CLK_TCK")
    share = {"machine_busy": round(
        (os.cpu_count() or 1) * (1 - (after[2] - before[2]) / max(1, after[1] - before[1])), 2)}
    for name in ("python", "postgres", "redis-server", "kernel"):
        ticks = after[0].get(name, 0) - before[0].get(name, 0)
        share[name] = round(ticks / hz / seconds, 2)
    # Processes that end within the window (wrk, pgbench and its backends) take their ticks
    # with them: what is busy but not attributed is theirs.
    share["other"] = round(max(0.0, share["machine_busy"] - sum(
        v for k, v in share.items() if k != "machine_busy")), 2)
    return share


def wrk(binary: str, base: str, script: str, *, seconds: int, connections: int,
        threads: int, env: dict[str, str]) -> dict[str, Any]:
    """Run wrk with a Lua script; returns the JSON summary the script prints, with the CPU
    each kind of process used meanwhile (in cores)."""
    full_env = {**os.environ, "BENCH_LUA": str(BENCH / "wrk"), "BENCH_WORK": str(WORK), **env}
    before = _cpu_snapshot()
    out = subprocess.run(
        [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(BENCH / "wrk" / script), base],
        env=full_env, capture_output=True, text=True, check=True, timeout=seconds + 60)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    summary: dict[str, Any] = json.loads(line)
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    summary["errors"] = sum(summary[k] for k in ("connect_errors", "read_errors",
                                                 "write_errors", "status_errors", "timeouts"))
    summary["cpu_cores"] = cpu_share(before, _cpu_snapshot(), summary["duration_us"] / 1e6)
    return summary


def pgbench(binary: str, dsn: str, *, seconds: int, connections: int, threads: int,
            defines: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Transactions per second of bench/pgbench/earn.sql."""
    args = [binary, "-n", "-M", "prepared", "-c", str(connections), "-j", str(threads),
            "-T", str(seconds), "-f", str(BENCH / "pgbench" / "earn.sql")]
    for name, value in defines.items():
        args += ["-D", f"{name}={value}"]
    before = _cpu_snapshot()
    out = subprocess.run([*args, dsn], capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr.strip()[-500:]}")
    cpu = cpu_share(before, _cpu_snapshot(), seconds)
    for line in out.stdout.splitlines():
        if line.startswith("tps =") and "without initial connection time" in line:
            return float(line.split()[2]), cpu
    raise RuntimeError(f"pgbench printed no tps: {out.stdout[-500:]}")


# -- scenarios -------------------------------------------------------------------------------


def _latency(summary: dict[str, Any]) -> dict[str, Any]:
    return {"rps": round(summary["rps"], 1), "p50_ms": summary["p50_us"] / 1000,
            "p99_ms": summary["p99_us"] / 1000, "max_ms": summary["max_us"] / 1000,
            "errors": summary["errors"], "requests": summary["requests"],
            "cpu_cores": summary["cpu_cores"]}


async def storm_check(dsn: str, prefix: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            select (select count(*) from idempotency_keys where idempotency_key like $1) as keys,
                   (select count(*) from purchases where receipt_id like $1) as purchases,
                   (select count(*) from point_entries e
                      join purchases p on p.member_id = e.member_id
                                      and p.purchase_id = e.purchase_id
                     where p.receipt_id like $1 and e.kind = 'earn') as earns,
                   (select count(*) from (
                        select p.receipt_id from purchases p
                          join point_entries e on e.member_id = p.member_id
                                              and e.purchase_id = p.purchase_id
                         where p.receipt_id like $1 and e.kind = 'earn'
                         group by p.receipt_id having count(*) > 1) d) as doubled
            """,
            prefix + "-%")
        assert row is not None
        return dict(row)
    finally:
        await conn.close()



def http_scenarios(
    chosen: list[str], *, wrk_binary: str, pgbench_binary: str | None, base: str, dsn: str,
    prepared: dict[str, Any], members: int, duration: int, connections: int, threads: int,
    common: dict[str, Any],
) -> list[Result]:
    """The chosen scenarios among earn, latency, read and storm, against the service at
    ``base`` on the loaded database ``dsn``."""
    results: list[Result] = []
    wrk_args = {"connections": connections, "threads": threads}
    run_id = dt.datetime.now().strftime("%H%M%S")
    earn_env = {"BENCH_TERMINAL_KEY": prepared["terminal_key"]}
    earn = None
    if {"earn", "latency"} & set(chosen):
        say("earn: warming up")
        wrk(wrk_binary, base, "earn.lua", seconds=3, **wrk_args,
            env={**earn_env, "BENCH_RUN": f"W{run_id}"})
        say(f"earn: POST /v1/pos/purchases for {duration}s at saturation")
        earn = wrk(wrk_binary, base, "earn.lua", seconds=duration, **wrk_args,
                   env={**earn_env, "BENCH_RUN": f"E{run_id}"})
    if "earn" in chosen and earn is not None:
        pgbench_cpu: dict[str, float] = {}
        if pgbench_binary is None:
            say("earn: pgbench not found, no reference")
            tps = 0.0
        else:
            say(f"earn: pgbench reference, {connections} clients")
            tps, pgbench_cpu = pgbench(pgbench_binary, dsn, seconds=duration,
                          connections=connections, threads=threads,
                          defines={"members": str(members),
                                   "terminal": prepared["terminal_id"],
                                   "store": prepared["store_id"]})
        results.append(Result("earn", earn["rps"], tps, "req/s",
                               "pgbench tps, same writes", common,
                               {**_latency(earn), "pgbench_cpu_cores": pgbench_cpu},
                               passed=earn["errors"] == 0))
    if "latency" in chosen and earn is not None:
        rate = earn["rps"] / 2
        delay = max(1, round(connections * 1000 / rate))
        say(f"latency: earn paced at about {rate:.0f} req/s")
        paced = wrk(wrk_binary, base, "earn.lua", seconds=duration, **wrk_args,
                    env={**earn_env, "BENCH_RUN": f"L{run_id}",
                         "BENCH_DELAY_MS": str(delay)})
        live = wrk(wrk_binary, base, "read.lua", seconds=duration, **wrk_args,
                   env={"BENCH_PATH": "/health/live", "BENCH_DELAY_MS": str(delay)})
        results.append(Result(
            "earn latency at half load (p99)", paced["p99_us"] / 1000,
            live["p99_us"] / 1000, "ms", "p99 of /health/live at the same pace",
            {**common, "target_rps": round(rate), "delay_ms": delay,
             "pacing": os.environ.get("BENCH_PACING", "fixed")},
            {"earn": _latency(paced), "live": _latency(live)},
            passed=paced["errors"] == 0))
    if "read" in chosen:
        say("read: GET /v1/me/points as random members")
        read = wrk(wrk_binary, base, "read.lua", seconds=duration, **wrk_args,
                   env={})
        say("read: reference GET /health/live")
        live = wrk(wrk_binary, base, "read.lua", seconds=duration, **wrk_args,
                   env={"BENCH_PATH": "/health/live", "BENCH_TOKENS": "0"})
        results.append(Result("member read", read["rps"], live["rps"], "req/s",
                              "GET /health/live", common,
                              {"read": _latency(read), "live": _latency(live)},
                              passed=read["errors"] == 0))
    if "storm" in chosen:
        say("storm: every purchase sent three times with one key")
        prefix = f"S{run_id}"
        storm = wrk(wrk_binary, base, "earn.lua", seconds=duration, **wrk_args,
                    env={**earn_env, "BENCH_RUN": prefix, "BENCH_REPEAT": "3"})
        check = asyncio.run(storm_check(dsn, prefix))
        exact = (check["keys"] == check["purchases"] == check["earns"]
                 and check["doubled"] == 0)
        say(f"storm: {check['keys']:,} keys, {check['purchases']:,} purchases, "
            f"{check['earns']:,} earn entries, {check['doubled']} doubled: "
            + ("exactly one earn per key" if exact else "NOT exactly once"))
        results.append(Result("retry storm", storm["rps"],
                              earn["rps"] if earn else 0.0, "req/s",
                              "earn at saturation", common,
                              {**_latency(storm), **check, "exactly_once": exact},
                              passed=exact and storm["errors"] == 0))
    return results

