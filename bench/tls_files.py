"""A throwaway CA, a server certificate it signs for 127.0.0.1, and an unrelated second CA.

Made with the ``openssl`` command for a TLS-only private redis-server.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import ConfigError

#: Long enough for any run; short, since the key sits in a temporary directory.
VALID_DAYS = 2


class OpensslUnavailable(ConfigError):
    """Raised when the openssl command, needed to make certificates, is not installed."""


@dataclass(frozen=True)
class TlsFiles:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def other_ca(self) -> Path:
        """A CA that signed nothing here: trusting it must fail the handshake."""
        return self.directory / "other-ca.pem"

    @property
    def cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key(self) -> Path:
        return self.directory / "server.key"


def make_tls_files(directory: Path) -> TlsFiles:
    if shutil.which("openssl") is None:
        raise OpensslUnavailable("the openssl command is not installed")
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    _openssl("genrsa", "-out", "server.key", "2048", cwd=directory)
    _openssl(
        "req", "-new", "-key", "server.key", "-subj", "/CN=127.0.0.1", "-out", "server.csr",
        cwd=directory,
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", str(VALID_DAYS), "-extfile", "san.ext", "-out", "server.pem",
        cwd=directory,
    )  # fmt: skip
    return TlsFiles(directory)


def _make_ca(d: Path, name: str) -> None:
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=d)
    _openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-days", str(VALID_DAYS),
        "-subj", f"/CN={name}", "-out", f"{name}.pem",
        cwd=d,
    )  # fmt: skip


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)
