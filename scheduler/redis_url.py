"""Redis URLs as redis-py, kombu and Celery all accept them, TLS included.

Celery's documentation spells the certificate check of a ``rediss://`` URL
with Python's constant names (``ssl_cert_reqs=CERT_REQUIRED``), which
redis-py rejects; only ``required``, ``optional`` and ``none`` work
everywhere. A ``rediss://`` URL without the parameter gets ``required``: a
server certificate is checked unless the operator says otherwise.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from scheduler.errors import ConfigError

_CERT_REQS = {
    "required": "required",
    "cert_required": "required",
    "optional": "optional",
    "cert_optional": "optional",
    "none": "none",
    "cert_none": "none",
}


def normalize_redis_url(url: str) -> str:
    """``url`` with ``ssl_cert_reqs`` spelled the one way every client accepts."""
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == "ssl_cert_reqs"]
    if not given:
        query.append(("ssl_cert_reqs", "required"))
    else:
        value = _CERT_REQS.get(given[-1].strip().lower())
        if value is None:
            raise ConfigError(
                f"ssl_cert_reqs={given[-1]!r} in a rediss:// URL: use required, optional or none"
            )
        query = [(k, v) for k, v in query if k != "ssl_cert_reqs"] + [("ssl_cert_reqs", value)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))
