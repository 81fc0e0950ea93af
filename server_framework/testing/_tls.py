"""Throwaway TLS certificates for tests, from trustme (a test dependency, imported on use).

One certificate authority and one server certificate (for ``localhost``, ``127.0.0.1`` and
``::1``) are made per process, on first use; each call then builds fresh contexts from them,
so a test that changes its contexts does not change another test's.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

__all__ = ["tls_contexts"]

#: The names the test certificate is valid for.
TLS_HOSTNAMES = ("localhost", "127.0.0.1", "::1")


@functools.cache
def _authority() -> tuple[Any, Any]:
    try:
        import trustme  # noqa: PLC0415  (a test dependency: only needed for TLS tests)
    except ImportError as exc:
        raise RuntimeError(
            "TLS without ssl= needs trustme to make a test certificate: pip install trustme "
            "(or pass ssl= and client_ssl= contexts of your own)"
        ) from exc
    ca = trustme.CA()
    return ca, ca.issue_cert(*TLS_HOSTNAMES)


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Return ``(server_context, client_context)``: a server certificate and a client that
    trusts it, from a throwaway certificate authority (made with trustme).

    The certificate is valid for ``localhost``, ``127.0.0.1`` and ``::1``. The contexts are
    new on every call; the authority behind them is made once per process.

    Raises:
        RuntimeError: trustme is not installed.
    """
    ca, certificate = _authority()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context
