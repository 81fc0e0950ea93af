"""The Greeter tested with server_framework's pytest plugin: no fixture or loop to set up."""

import pytest
from greeter import Greeter

import server_framework as sf
from server_framework.testing import ServeFactory, serve_in_background

JSON_LINES = sf.StreamProtocol(sf.JSONSerializer())


def test_greeter(sf_serve: ServeFactory) -> None:  # a plain test: the server runs in a thread
    with sf_serve(Greeter(), JSON_LINES) as served:
        assert served.client.request({"name": "a"}) == {"greeting": "hello, a"}


@pytest.mark.server_framework  # runs three times: on asyncio, uvloop and trio
async def test_greeter_on_every_loop() -> None:
    async with serve_in_background(Greeter(), JSON_LINES, transport="unix") as served:
        assert await served.client.request({"name": "b"}) == {"greeting": "hello, b"}


@pytest.mark.trio  # pytest-trio's tests use it the same way
async def test_greeter_with_pytest_trio() -> None:
    async with serve_in_background(Greeter(), JSON_LINES) as served:
        assert await served.client.request({}) == {"greeting": "hello, world"}
