"""Settings: one msgspec Struct read from ``LOYALTY_*`` environment variables, one loader."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta

from loyalty.core.errors import ConfigurationError

PREFIX = "LOYALTY_"

Port = Annotated[int, Meta(ge=1, le=65535)]
Positive = Annotated[int, Meta(ge=1)]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the service reads from its environment. Field ``x`` is ``LOYALTY_X``."""

    # Where things run. No URL means the embedded server under ``data_dir``.
    database_url: str | None = None
    redis_url: str | None = None
    # None: ``default_data_dir()``. A relative path is resolved once, by ``load_settings``, so
    # every command finds the same directory wherever it is run from.
    data_dir: str | None = None
    host: str = "127.0.0.1"
    port: Port = 8000
    workers: Annotated[int, Meta(ge=1, le=64)] = 1
    db_pool_min: Annotated[int, Meta(ge=0)] = 2
    db_pool_max: Positive = 20
    statement_timeout_seconds: Annotated[int, Meta(ge=1, le=3600)] = 60
    # Group commit (docs/decisions/0022-group-commit.md): purchases waiting while this many
    # group writes are in flight in a process go together, by one statement and one commit,
    # at most ``group_commit_most`` a group. 0: each purchase is written alone.
    group_commit_writers: Annotated[int, Meta(ge=0, le=64)] = 1
    group_commit_most: Annotated[int, Meta(ge=1, le=200)] = 16
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    migrate_on_start: bool = True

    # Tokens. With no key configured one is generated into ``data_dir`` on first run.
    jwt_issuer: str = "loyalty"
    jwt_private_key: str | None = None
    jwt_previous_public_keys: str | None = None
    access_token_ttl_seconds: Annotated[int, Meta(ge=30, le=86_400)] = 900
    refresh_token_ttl_seconds: Annotated[int, Meta(ge=300)] = 30 * 86_400
    # A session (a refresh-token family) ends this long after its sign-in however often it
    # is refreshed: a stolen refresh token kept fresh by rotation does not live for ever.
    session_max_age_seconds: Annotated[int, Meta(ge=300)] = 90 * 86_400
    argon2_time_cost: Annotated[int, Meta(ge=1, le=20)] = 3
    argon2_memory_kib: Annotated[int, Meta(ge=8, le=4_194_304)] = 65_536
    argon2_parallelism: Annotated[int, Meta(ge=1, le=16)] = 4

    # Abuse limits, per minute; counted atomically in Redis.
    rate_limit_per_minute: Positive = 1200
    # How many of a principal's requests one call to Redis may count at once, the process
    # answering the next ones from the rest (docs/decisions/0020-rate-limit-allowance.md); taken
    # only when the limit is at least 50 times it. 1: every request asks Redis.
    rate_limit_allowance: Annotated[int, Meta(ge=1, le=100)] = 8
    login_rate_limit_per_minute: Positive = 20
    login_failures_per_account: Positive = 10
    login_failure_window_seconds: Positive = 900
    # Member lookups by number or phone per till (a card scan names only who showed it): a
    # busy till serves a customer a minute or two, so 60 leaves room for typos and retries
    # while reading the membership through a till takes days, not minutes.
    terminal_lookups_per_minute: Positive = 60
    trusted_proxies: tuple[str, ...] = ()
    max_request_bytes: Annotated[int, Meta(ge=1024, le=100_000_000)] = 1_048_576
    # Browsers may call the API from these origins (the member web app), e.g.
    # https://app.example.com; none: no cross-origin calls at all.
    cors_origins: tuple[Annotated[str, Meta(pattern=r"^https?://[^/\s]+$")], ...] = ()

    # /metrics reveals traffic and business volumes: it answers anyone only when public (a
    # scraper on a private network), else only with this bearer token, else not at all.
    metrics_public: bool = False
    metrics_token: Annotated[str, Meta(min_length=16)] | None = None

    # How long a retry waits for the first request under its Idempotency-Key to finish before
    # it is answered 409 (in flight, retry later): long enough for an ordinary write to commit
    # and be replayed, short enough not to hold a client on a bulk one.
    idempotency_wait_ms: Annotated[int, Meta(ge=1, le=60_000)] = 2000

    # The staff console (console/, docs/console.md): its language until a staff member picks
    # one; a console session ends after this long without a request, and this long after its
    # sign-in however busy (a shared shop-floor computer is not signed in for ever).
    console_language: Literal["ja", "en"] = "ja"
    console_idle_timeout_seconds: Annotated[int, Meta(ge=60, le=86_400)] = 1800
    console_session_max_age_seconds: Annotated[int, Meta(ge=300, le=7 * 86_400)] = 43_200
    # The segment builder counts exactly while the members table holds up to this many rows
    # (PostgreSQL's estimate); above, it estimates from a sample of pages holding about
    # ``segment_sample_members`` members, and counts exactly when asked.
    segment_exact_count_up_to: Annotated[int, Meta(ge=0)] = 200_000
    segment_sample_members: Annotated[int, Meta(ge=100, le=1_000_000)] = 20_000

    # The programme.
    default_region: Annotated[str, Meta(pattern=r"^[A-Z]{2}$")] = "JP"
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")] = "JPY"
    timezone: str = "Asia/Tokyo"
    # Attribute keys a member may set on themselves (PATCH /v1/me, sign-up), e.g.
    # ``newsletter_topics,favourite_store``; every other key is staff's, because segments select
    # on attributes and a member must not be able to put themselves into one (``vip``). A
    # setting rather than data: the app ships a field for each key, so the list changes with a
    # release of the app, not at run time.
    member_attributes: tuple[str, ...] = ()
    # RFM frequency and monetary value count purchases of the last N days.
    rfm_window_days: Annotated[int, Meta(ge=1, le=3650)] = 365
    # The most points one purchase, and one engagement action, earns whatever the rules say:
    # a slip in the rules (1,000,000 points per 1) costs at most this much, the trace shows the
    # ceiling applied, and even at the highest setting a balance would need 9 × 10^9 such
    # purchases to reach what the ledger's bigint columns hold.
    max_points_per_purchase: Annotated[int, Meta(ge=1, le=1_000_000_000)] = 1_000_000
    max_points_per_action: Annotated[int, Meta(ge=1, le=1_000_000_000)] = 10_000
    # A change of earning rules or tiers that multiplies what the last purchases earn by more
    # than this is refused until it is sent again with "confirm": true.
    rule_change_confirm_factor: Annotated[float, Meta(ge=1, le=1_000_000)] = 10.0
    # A rule backtest of a period with more purchases than this runs in the background (202,
    # with its progress); one with fewer is answered at once.
    backtest_sync_purchases: Annotated[int, Meta(ge=0, le=10_000_000)] = 5_000

    # Scheduled jobs. ``serve`` runs the scheduler too unless this is off (docker-compose runs
    # it as ``loyalty scheduler`` instead); one instance leads however many run.
    scheduler: Literal["embedded", "off"] = "embedded"
    # Overrides of the default schedules: ``name=cron;name=cron``, or ``name=off``.
    job_schedules: str | None = None
    # A member with no purchase or engagement for this many business days becomes dormant.
    dormancy_days: Annotated[int, Meta(ge=1, le=3650)] = 180
    # points.expiring_soon (issue 15): members are told of points expiring within this many
    # days, once per member and expiry day (the expiring_soon job).
    expiring_soon_days: Annotated[int, Meta(ge=1, le=365)] = 7
    # A draft campaign whose action and holdout the reactivation job copies for each wave of
    # newly dormant members; none, and nobody is handed over.
    reactivation_campaign: UUID | None = None
    # At risk: days since the last purchase beyond this multiple of the member's own typical
    # interval between purchases, for members with at least this many purchases.
    at_risk_multiple: Annotated[float, Meta(gt=1, le=100)] = 2.0
    at_risk_min_purchases: Annotated[int, Meta(ge=2, le=1000)] = 3
    # Birthday rewards, once per member per year on their birthday: points and/or a coupon.
    birthday_points: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    birthday_coupon_template: UUID | None = None

    # Analytics: the gross margin LTV is computed with, and what one point is worth in the
    # programme's currency (for the outstanding liability).
    ltv_margin: Annotated[float, Meta(gt=0, le=1)] = 0.3
    point_value: Annotated[float, Meta(ge=0, le=1_000_000)] = 1.0

    # Webhooks (docs/decisions/0014-webhook-delivery.md). Endpoint URLs must be https and
    # resolve only to global addresses; this allows http and private, loopback and link-local
    # addresses too (never the cloud metadata addresses), for development and tests.
    webhooks_allow_private: bool = False
    # ``serve`` runs a delivery worker too unless this is off (``loyalty worker`` runs one alone).
    webhooks_worker: Literal["embedded", "off"] = "embedded"
    # ``loyalty worker`` lowers its CPU priority by this much (os.nice): on a machine it shares
    # with the API, the tills come first and deliveries take the CPU left over; alone on a
    # machine it makes no difference. 0 keeps the priority it was started with.
    webhooks_worker_nice: Annotated[int, Meta(ge=0, le=19)] = 10
    # The worker is woken by NOTIFY; it also looks for due deliveries this often.
    webhooks_poll_seconds: Annotated[float, Meta(gt=0, le=300)] = 5.0
    # Retries: after the n-th failure, base × 2^(n-1) seconds (at most max), ±20 % jitter,
    # for as long as ``retry_for`` after the delivery was written (about three days).
    webhooks_retry_base_seconds: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    webhooks_retry_max_seconds: Annotated[float, Meta(gt=0, le=86_400)] = 6 * 3600.0
    webhooks_retry_for_seconds: Annotated[int, Meta(ge=1, le=30 * 86_400)] = 3 * 86_400
    # An endpoint failing without one success for this long is disabled.
    webhooks_disable_after_seconds: Annotated[int, Meta(ge=1, le=90 * 86_400)] = 5 * 86_400
    # A claimed delivery is someone's for this long: a worker that dies mid-attempt hands it
    # back after it. Longer than the 10 s request timeout.
    webhooks_lease_seconds: Annotated[int, Meta(ge=15, le=3600)] = 60
    # After a rotation the previous secret still signs, beside the new one, this long.
    webhooks_secret_grace_seconds: Annotated[int, Meta(ge=0, le=30 * 86_400)] = 86_400
    # Delivered events (and events nobody subscribes to) are deleted after this many days.
    webhooks_retention_days: Annotated[int, Meta(ge=1, le=3650)] = 7
    # Audit rows older than this many days are deleted by the audit_retention job, whole days
    # at a time; 0 keeps them for ever (the default).
    audit_retention_days: Annotated[int, Meta(ge=0, le=36_500)] = 0
    # An erasure a member (or staff for them) asks for is done this many days later; until
    # then the member may sign in and cancel it. 0: at once. Two weeks catch a mistaken or
    # hostile request (a stolen phone) and stay well inside GDPR's one month to act (art. 12(3)).
    erasure_grace_days: Annotated[int, Meta(ge=0, le=30)] = 14
    # Members without a purchase or engagement for this many years are erased by the
    # member_retention job; 0 (the default) keeps them.
    member_retention_years: Annotated[int, Meta(ge=0, le=100)] = 0

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve() if self.data_dir else default_data_dir()


# The directory that holds the ``loyalty`` package: a source checkout (``make run``, ``make
# test``) or site-packages (an installed copy).
_CODE_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir(code_root: Path = _CODE_ROOT) -> Path:
    """``.loyalty`` in the source checkout the code runs from; for an installed copy, the
    user's data directory (``$XDG_DATA_HOME/loyalty``, else ``~/.local/share/loyalty``)."""
    # Not the working directory: a command run from elsewhere would start an empty database
    # of its own that the running API never sees. One directory per checkout, not per user,
    # so two checkouts at different migrations never share a database.
    if (code_root / "pyproject.toml").is_file():
        return code_root / ".loyalty"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "loyalty"


_TUPLE_FIELDS = {"trusted_proxies", "cors_origins", "member_attributes"}
# schemas.base.AttributeKey: a declared key that no attribute could have would declare nothing.
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VARIABLES = {PREFIX + name.upper() for name in Settings.__struct_fields__}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read ``LOYALTY_*`` variables into ``Settings``; a bad value fails naming its variable."""
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for name in Settings.__struct_fields__:
        value = env.get(PREFIX + name.upper())
        if value is None or value == "":
            continue
        if name in _TUPLE_FIELDS:
            raw[name] = tuple(part.strip() for part in value.split(",") if part.strip())
        else:
            raw[name] = value
    # Exact names: a mis-cased LOYALTY_Port is never read, so it must not pass silently.
    unknown = sorted(
        key
        for key in env
        if key.startswith(PREFIX) and key not in _VARIABLES
        and not key.startswith(PREFIX + "TEST_")
        and not key.startswith(PREFIX + "BENCH_")
    )
    if unknown:
        raise ConfigurationError(
            f"unknown setting {unknown[0]}: see the README's configuration table")
    raw.update(overrides)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(_name_the_variable(str(exc))) from None
    _check_timezone(settings.timezone)
    _check_networks(settings.trusted_proxies)
    if settings.data_dir:
        settings = msgspec.structs.replace(settings, data_dir=str(settings.data_path))
    for key in settings.member_attributes:
        if not _ATTRIBUTE_KEY.match(key):
            raise ConfigurationError(
                f"{PREFIX}MEMBER_ATTRIBUTES: {key!r} is not an attribute key (letters, digits,"
                " '_', '.', '-'; at most 64)")
    if settings.argon2_memory_kib < 8 * settings.argon2_parallelism:
        # argon2 itself refuses this, but only at the first password hashed.
        raise ConfigurationError(
            f"{PREFIX}ARGON2_MEMORY_KIB: must be at least 8 × {PREFIX}ARGON2_PARALLELISM"
            f" ({8 * settings.argon2_parallelism})")
    return settings


def _name_the_variable(message: str) -> str:
    match = re.search(r"at `\$\.(\w+)", message)
    if not match:
        return f"invalid settings: {message}"
    variable = PREFIX + match.group(1).upper()
    reason = message.split(" - at ")[0]
    return f"{variable}: {reason}"


def _check_networks(entries: tuple[str, ...]) -> None:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"{PREFIX}TRUSTED_PROXIES: {entry!r} is not an address or network") from None


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"{PREFIX}TIMEZONE: unknown time zone {name!r}") from None
