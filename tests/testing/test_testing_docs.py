"""The testing how-to's examples (docs/examples/howto/greeter_tests.py) run here, every one of
them, on every loop; test_with_plugin.py runs under pytest itself in test_pytest_plugin.py."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from server_framework.backend import BackendName

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "examples" / "howto"


@pytest.fixture(scope="module")
def greeter_tests() -> Iterator[ModuleType]:
    """The example module, imported as pytest would from its folder."""
    sys.path.insert(0, str(HOWTO))
    try:
        yield importlib.import_module("greeter_tests")
    finally:
        sys.path.remove(str(HOWTO))


def test_every_example_test_is_run_here(greeter_tests: ModuleType) -> None:
    names = {name for name in vars(greeter_tests) if name.startswith("test_")}
    assert names == {
        "test_greeter_over_udp",
        "test_greeter_over_tcp",
        "test_blocking_client_against_a_thread_server",
        "test_greeter_survives_misbehaving_peers",
        "test_protocol_without_sockets",
    }


def test_examples_on_every_loop(greeter_tests: ModuleType, backend_name: BackendName) -> None:
    greeter_tests.test_greeter_over_udp(backend_name)
    greeter_tests.test_greeter_over_tcp(backend_name)


def test_examples_without_a_loop_argument(greeter_tests: ModuleType) -> None:
    greeter_tests.test_blocking_client_against_a_thread_server()
    greeter_tests.test_greeter_survives_misbehaving_peers()
    greeter_tests.test_protocol_without_sockets()
