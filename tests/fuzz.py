"""Fuzz the served API with schemathesis, as a member, a store terminal and an admin would call
it, against its own OpenAPI document: no answer may be a server error, have a status the
document does not list, or a body that does not match the document.

    python -m tests.fuzz [--max-examples N] [--seed N]        (make fuzz; .ci/run runs it)

It starts the API with `loyalty serve` on a database of its own (on the embedded servers unless
LOYALTY_TEST_DATABASE_URL / LOYALTY_TEST_REDIS_URL say otherwise, like the test suite), and runs
every phase (examples, coverage, fuzzing, stateful) once per principal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from loyalty.access.passwords import Passwords
from loyalty.access.staff import create_staff
from loyalty.access.stores import create_terminal, ensure_store
from loyalty.core.db import drop_database, recreate_database
from loyalty.core.embedded import service_urls
from tests.processes import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "fuzzing is a long password"
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


# Segment definitions are trees of 22 kinds of condition: the coverage phase walks every boundary
# of every node (114,000 requests, five minutes, for /v1/segments alone), so they are fuzzed with
# many more random trees instead (the unit tests cover the tree's bounds exhaustively).
TREES = r"^/v1/segments"
TREE_EXAMPLES = 300


@dataclass
class Principal:
    name: str
    authorization: str
    # The operations this principal is for: the coverage phase (every boundary and invalid value
    # of every field, by far the most requests) runs on these only; the other phases run every
    # operation, so each principal also meets every refusal it should.
    own: str
    trees: bool = False




@contextmanager
def _serving(database_url: str, redis_url: str, data_dir: str) -> Iterator[str]:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")},
           "LOYALTY_DATABASE_URL": database_url, "LOYALTY_REDIS_URL": redis_url,
           "LOYALTY_DATA_DIR": data_dir, "LOYALTY_PORT": str(port),
           "LOYALTY_MIGRATE_ON_START": "false", "LOYALTY_SCHEDULER": "off",
           "LOYALTY_LOG_LEVEL": "error",
           # Fuzzing is one client sending thousands of requests a minute: not an attack.
           "LOYALTY_RATE_LIMIT_PER_MINUTE": "10000000",
           "LOYALTY_LOGIN_RATE_LIMIT_PER_MINUTE": "10000000",
           "LOYALTY_TERMINAL_LOOKUPS_PER_MINUTE": "10000000",
           "LOYALTY_LOGIN_FAILURES_PER_ACCOUNT": "10000000",
           # The runs take longer than an access token's usual 15 minutes.
           "LOYALTY_ACCESS_TOKEN_TTL_SECONDS": "86400",
           "LOYALTY_ARGON2_TIME_COST": "1", "LOYALTY_ARGON2_MEMORY_KIB": "8",
           "LOYALTY_ARGON2_PARALLELISM": "1"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "loyalty"), "serve"], env=env,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(base, server, seconds=60)
        except RuntimeError as exc:
            raise SystemExit(f"fuzz: {exc}; its output is above") from None
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


async def _principals(base: str, database_url: str) -> list[Principal]:
    conn = await asyncpg.connect(database_url)
    try:
        passwords = Passwords(time_cost=1, memory_kib=8, parallelism=1)
        await create_staff(conn, email="fuzz-admin@staff.example", role="admin",
                           password_hash=await passwords.hash(PASSWORD))
        terminal = await create_terminal(conn, store=await ensure_store(conn, code="FUZZ-01"))
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=base) as client:
        member = await client.post("/v1/auth/member/register", json={
            "email": "fuzz-member@example.com", "password": PASSWORD, "name": "Fuzz"})
        admin = await client.post("/v1/auth/staff/login", json={
            "email": "fuzz-admin@staff.example", "password": PASSWORD})
    member.raise_for_status()
    admin.raise_for_status()
    return [Principal("member", f"Bearer {member.json()['tokens']['access_token']}",
                      r"^/v1/(me|auth)(/|$)"),
            Principal("terminal", f"Bearer {terminal.api_key}", r"^/v1/pos/"),
            Principal("admin", f"Bearer {admin.json()['access_token']}",
                      r"^/(?!v1/(me|auth|pos|segments)(/|$))", trees=True)]


def _fuzz(base: str, principal: Principal, args: argparse.Namespace,
          report: Path) -> dict[str, int]:
    """The coverage phase on the principal's own operations, then the others on all of them."""
    print(f"\n== as {principal.name}", flush=True)
    # One worker: hypothesis describes strategies with ast.parse, which CPython 3.11 does not do
    # safely on two threads at once ("AST constructor recursion depth mismatch").
    runs = [("coverage", ["--phases", "coverage", "--include-path-regex", principal.own]),
            ("fuzzing", ["--phases", "examples,fuzzing,stateful"])]
    if principal.trees:
        runs.append(("trees", ["--phases", "fuzzing", "--include-path-regex", TREES,
                               "--max-examples", str(TREE_EXAMPLES)]))
    results = [_run(base, principal, args, report.with_suffix(f".{name}.ndjson"),
                    [*options, "--workers", "1"]) for name, options in runs]
    return {"exit": max(r["exit"] for r in results),
            "operations": max(r["operations"] for r in results),
            "cases": sum(r["cases"] for r in results)}


def _run(base: str, principal: Principal, args: argparse.Namespace, report: Path,
         options: list[str]) -> dict[str, int]:
    command = [
        str(Path(sys.executable).parent / "st"), "run", f"{base}/schema/openapi.json",
        "--checks", CHECKS, "--max-examples", str(args.max_examples), *options,
        "--seed", str(args.seed), "--no-color", "--generation-database", "none",
        "--header", f"Authorization: {principal.authorization}",
        "--report", "ndjson", "--report-ndjson-path", str(report),
        "--request-timeout", "30",
    ]
    status = subprocess.run(command, check=False).returncode
    return {"exit": status, **_counts(report)}


def _counts(report: Path) -> dict[str, int]:
    """Operations and test cases from schemathesis' event stream."""
    operations: set[str] = set()
    cases = 0
    for line in report.read_text().splitlines():
        event = json.loads(line)
        for kind, body in event.items():
            if kind == "ScenarioFinished":
                label = body.get("label") or body.get("recorder", {}).get("label")
                if label and label.split(" ")[0] in _METHODS:  # not a stateful scenario's
                    operations.add(label)
                recorder = body.get("recorder", {})
                cases += len(recorder.get("cases", {}))
    return {"operations": len(operations), "cases": cases}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--as", dest="principals", default="member,terminal,admin",
                        help="comma-separated: member, terminal, admin")
    args = parser.parse_args(argv)
    with service_urls(os.environ.get("LOYALTY_TEST_DATABASE_URL") or None,
                      os.environ.get("LOYALTY_TEST_REDIS_URL") or None,
                      ROOT / ".loyalty" / "test") as urls, \
            tempfile.TemporaryDirectory() as scratch:
        database = f"loyalty_fuzz_{os.getpid()}"
        database_url = asyncio.run(recreate_database(urls.database_url, database))
        try:
            with _serving(database_url, urls.redis_url, scratch) as base:
                principals = asyncio.run(_principals(base, database_url))
                results = {p.name: _fuzz(base, p, args, Path(scratch) / f"{p.name}.ndjson")
                           for p in principals if p.name in args.principals.split(",")}
        finally:
            asyncio.run(drop_database(urls.database_url, database))
    print("\nfuzz:", ", ".join(f"as {name} {r['operations']} operations, {r['cases']} cases"
                              for name, r in results.items()))
    failed = [name for name, r in results.items() if r["exit"] != 0]
    if failed:
        raise SystemExit(f"fuzz: failures as {', '.join(failed)}: see the reports above")


if __name__ == "__main__":
    main()
