"""Fixtures of the reliability suite (the helpers themselves are in reliability_helpers)."""

from __future__ import annotations

import ssl
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from reliability_helpers import Servers

# The suite reads what a server costs from /proc (RSS, descriptors, CPU time): Linux only.
if not sys.platform.startswith("linux"):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A private temporary directory (Unix socket paths, events files), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="sf-rel-") as directory:
        yield Path(directory)


@pytest.fixture
def servers(workdir: Path) -> Iterator[Servers]:
    """Starts server subprocesses (``servers.start(loop, spec...)``); all closed afterwards."""
    started = Servers(workdir)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="session")
def tls_files() -> Iterator[tuple[dict[str, str], ssl.SSLContext]]:
    """``({"cert": ..., "key": ...}, client_context)`` from a throwaway CA, for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with tempfile.TemporaryDirectory(prefix="sf-rel-tls-") as directory:
        cert_path = Path(directory) / "cert.pem"
        key_path = Path(directory) / "key.pem"
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(cert_path), append=True)
        cert.private_key_pem.write_to_path(str(key_path))
        yield {"cert": str(cert_path), "key": str(key_path)}, client_context
