"""Settings come from ``LOYALTY_*`` variables; a bad one stops the start, naming itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from loyalty.core.errors import ConfigurationError
from loyalty.core.settings import Settings, default_data_dir, load_settings
from tests.conftest import ROOT


def test_no_variables_give_the_documented_defaults() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.port == 8000
    assert settings.log_level == "info"
    assert settings.migrate_on_start is True
    assert settings.trusted_proxies == ()
    assert settings.default_region == "JP"
    assert settings.currency == "JPY"
    assert settings.timezone == "Asia/Tokyo"


def test_variables_are_read_and_converted_to_their_types() -> None:
    settings = load_settings({
        "LOYALTY_PORT": "9000",
        "LOYALTY_LOG_LEVEL": "debug",
        "LOYALTY_MIGRATE_ON_START": "false",
        "LOYALTY_DATABASE_URL": "postgresql://db/loyalty",
        "LOYALTY_TIMEZONE": "Europe/Paris",
    })
    assert settings.port == 9000
    assert settings.log_level == "debug"
    assert settings.migrate_on_start is False
    assert settings.database_url == "postgresql://db/loyalty"
    assert settings.timezone == "Europe/Paris"


def test_variables_outside_the_prefix_are_ignored() -> None:
    assert load_settings({"PORT": "1", "PATH": "/usr/bin"}) == Settings()


def test_overrides_win_over_the_environment() -> None:
    assert load_settings({"LOYALTY_PORT": "9000"}, port=9100).port == 9100


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOYALTY_PORT", "abc"),
        ("LOYALTY_PORT", "70000"),
        ("LOYALTY_PORT", "0"),
        ("LOYALTY_LOG_LEVEL", "loud"),
        ("LOYALTY_TIMEZONE", "Mars/Olympus"),
        ("LOYALTY_DEFAULT_REGION", "jp"),
        ("LOYALTY_CURRENCY", "yen"),
        ("LOYALTY_MIGRATE_ON_START", "maybe"),
        ("LOYALTY_ACCESS_TOKEN_TTL_SECONDS", "5"),
        ("LOYALTY_RATE_LIMIT_ALLOWANCE", "0"),
    ],
)
def test_bad_value_fails_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings({variable: value})
    assert refused.value.detail.startswith(f"{variable}:")


def test_bad_override_fails_naming_its_variable() -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings({}, port=0)
    assert refused.value.detail.startswith("LOYALTY_PORT:")


@pytest.mark.parametrize("variable", ["LOYALTY_PROT", "LOYALTY_DATABASE", "LOYALTY_Port"])
def test_unknown_variable_is_refused_naming_it(variable: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings({"LOYALTY_PORT": "9000", variable: "1"})
    assert variable in refused.value.detail


def test_test_and_bench_variables_are_tolerated() -> None:
    settings = load_settings({
        "LOYALTY_TEST_DATABASE_URL": "postgresql://test/db",
        "LOYALTY_BENCH_MEMBERS": "1000000",
    })
    assert settings == Settings()


def test_trusted_proxies_comma_list_becomes_a_tuple() -> None:
    settings = load_settings({"LOYALTY_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2 ,,192.168.0.0/16,"})
    assert settings.trusted_proxies == ("10.0.0.1", "10.0.0.2", "192.168.0.0/16")


def test_member_attributes_are_a_list_of_attribute_keys() -> None:
    settings = load_settings({"LOYALTY_MEMBER_ATTRIBUTES": "newsletter_topics, favourite_store,"})
    assert settings.member_attributes == ("newsletter_topics", "favourite_store")
    assert Settings().member_attributes == ()
    with pytest.raises(ConfigurationError, match="LOYALTY_MEMBER_ATTRIBUTES: 'vip level'"):
        load_settings({"LOYALTY_MEMBER_ATTRIBUTES": "vip level"})


@pytest.mark.parametrize(
    "variable",
    ["LOYALTY_PORT", "LOYALTY_LOG_LEVEL", "LOYALTY_TIMEZONE", "LOYALTY_TRUSTED_PROXIES",
     "LOYALTY_DATABASE_URL", "LOYALTY_MIGRATE_ON_START"],
)
def test_empty_value_means_the_default(variable: str) -> None:
    assert load_settings({variable: ""}) == Settings()


def test_the_default_data_directory_is_the_checkouts_wherever_a_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings({}).data_path == ROOT / ".loyalty"


def test_a_relative_data_directory_is_made_absolute_once_when_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"LOYALTY_DATA_DIR": "data"})
    assert settings.data_dir == str(tmp_path / "data")
    monkeypatch.chdir(ROOT)
    assert settings.data_path == tmp_path / "data"


def test_an_installed_copy_keeps_its_data_in_the_users_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert default_data_dir(site_packages) == tmp_path / "share" / "loyalty"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir(site_packages) == tmp_path / "home" / ".local" / "share" / "loyalty"
