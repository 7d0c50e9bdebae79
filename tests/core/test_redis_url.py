"""Given a rediss:// URL spelled as Celery's docs show it, every client gets one it accepts."""

from __future__ import annotations

import pytest

from scheduler.errors import ConfigError
from scheduler.redis_url import normalize_redis_url
from scheduler.settings import Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6379/0", "redis://h:6379/0"),
        (
            "rediss://:pw@h:6380/0?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs=/etc/ca.pem",
            "rediss://:pw@h:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
        ),
        ("rediss://h:6380/0?ssl_cert_reqs=none", "rediss://h:6380/0?ssl_cert_reqs=none"),
        ("rediss://h:6380/0", "rediss://h:6380/0?ssl_cert_reqs=required"),
    ],
)
def test_cert_checks_are_spelled_the_way_redis_py_and_kombu_accept(url: str, expected: str) -> None:
    assert normalize_redis_url(url) == expected


def test_an_unknown_cert_check_is_a_clear_one_line_error() -> None:
    with pytest.raises(ConfigError, match="use required, optional or none"):
        normalize_redis_url("rediss://h:6380/0?ssl_cert_reqs=maybe")


def test_settings_normalize_every_redis_url_they_read() -> None:
    s = Settings.from_env(
        {
            "IOTSCHED_REDIS_URL": "rediss://h:6380/0?ssl_cert_reqs=CERT_REQUIRED",
            "IOTSCHED_BROKER_URL_EU_WEST": "rediss://b:6380/0?ssl_cert_reqs=CERT_OPTIONAL",
        }
    )
    assert s.redis_url.endswith("ssl_cert_reqs=required")
    assert s.region_broker_urls["eu-west"].endswith("ssl_cert_reqs=optional")
