"""Credentials and the bind rule the metrics exporter and the dashboard share."""

from __future__ import annotations

import base64

import pytest

from recovery.access import Credentials, Variables, is_loopback, require_private
from recovery.errors import ConfigError

METRICS = Variables.of("metrics")
DASHBOARD = Variables.of("dashboard", token=True)
TOKEN = "DOCRECOVERY_DASHBOARD_TOKEN"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "env",
    [
        {METRICS.user: "prom"},
        {METRICS.password: "s3cret"},
        {METRICS.user: "a:b", METRICS.password: "s3cret"},
    ],
)
def test_credentials_set_by_half_or_unusable_are_refused_by_name(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as raised:
        Credentials.from_env(METRICS, env)

    assert "DOCRECOVERY_METRICS_" in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_a_servers_variables_follow_its_name() -> None:
    assert (
        Variables("DOCRECOVERY_DASHBOARD_USER", "DOCRECOVERY_DASHBOARD_PASSWORD", TOKEN)
        == DASHBOARD
    )
    assert METRICS.token is None


def test_credentials_read_from_the_environment_by_each_servers_names() -> None:
    env = {TOKEN: "abc", METRICS.user: "prom", METRICS.password: "pw"}

    assert Credentials.from_env(DASHBOARD, env) == Credentials(token="abc")
    assert Credentials.from_env(METRICS, env) == Credentials("prom", "pw")
    assert not Credentials.from_env(METRICS, {}).required
    # a token variable the server does not read is ignored
    assert not Credentials.from_env(METRICS, {"DOCRECOVERY_METRICS_TOKEN": "x"}).required


def test_who_accepts_exactly_the_configured_user_password_or_token() -> None:
    both = Credentials("ops", "s3cret", "t0ken")

    assert both.who(basic("ops", "s3cret")) == ("ops", False)
    assert both.who("Bearer t0ken") == ("token", True)
    for wrong in (
        basic("ops", "wrong"),
        basic("other", "s3cret"),
        "Basic not-base64!",
        "Bearer wrong",
        "",
        None,
    ):
        assert both.who(wrong) is None
    assert Credentials(token="t0ken").who(basic("ops", "s3cret")) is None


def test_the_credentials_never_show_the_password_or_token() -> None:
    shown = repr(Credentials("ops", "s3cret", "t0ken"))

    assert "ops" in shown
    assert "s3cret" not in shown
    assert "t0ken" not in shown


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        ("example.com", False),
        ("10.0.0.1", False),
    ],
)
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_public_bind_needs_credentials_and_names_the_variables() -> None:
    with pytest.raises(ConfigError) as raised:
        require_private("0.0.0.0", Credentials(), DASHBOARD, "it can delete")

    message = str(raised.value)
    assert all(name in message for name in (DASHBOARD.user, DASHBOARD.password, TOKEN))
    require_private("0.0.0.0", Credentials(token="t"), DASHBOARD, "it can delete")
    require_private("127.0.0.1", Credentials(), DASHBOARD, "it can delete")
