"""Settings come from ``LOYALTY_*`` variables; a bad one stops the start, naming itself."""

from __future__ import annotations

import pytest

from loyalty.errors import ConfigurationError
from loyalty.settings import Settings, load_settings


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
