"""Fixtures shared by the functional tests (the loop fixture itself is in tests/conftest.py)."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Iterator

import pytest
import trustme


@pytest.fixture
def tmp_dir() -> Iterator[str]:
    """A temporary directory (for Unix socket paths), removed after the test."""
    with tempfile.TemporaryDirectory(prefix="sf-test-") as directory:
        yield directory


@pytest.fixture(scope="session")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """``(server_context, client_context)`` from a throwaway CA, for ``localhost``/127.0.0.1."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context
