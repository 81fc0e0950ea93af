"""Types of the compiled engine (``_cengine.pyx``): the same as its pure-Python twins'."""

import asyncio
import contextvars
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from handlers.base import RecvParams
from protocols import StreamDecoder

Blocked = tuple[Coroutine[Any, Any, Any], Any, int]

class CompiledDecoder(StreamDecoder[Any]):
    def __init__(self, deserialize: Callable[[bytes], Any] | None, max_frame_size: int) -> None: ...
    def __next__(self) -> Any: ...
    def peek(self, size: int = ...) -> bytes: ...

class LineDecoder(CompiledDecoder):
    def __init__(
        self, deserialize: Callable[[bytes], Any] | None, max_frame_size: int, delimiter: bytes
    ) -> None: ...

class LengthPrefixDecoder(CompiledDecoder):
    def __init__(
        self, deserialize: Callable[[bytes], Any] | None, max_frame_size: int, header_size: int
    ) -> None: ...

class FixedSizeDecoder(CompiledDecoder): ...

class DatagramInbox:
    def __init__(self, decode: Callable[[bytes], Any] | None, limit: int) -> None: ...
    @property
    def broken(self) -> bool: ...
    def feed(self, datagram: bytes) -> bool: ...
    def __iter__(self) -> DatagramInbox: ...
    def __next__(self) -> Any: ...
    @property
    def buffered(self) -> int: ...
    def take_all(self) -> list[bytes]: ...

def make_decoder(protocol: Any) -> StreamDecoder[Any]: ...
def make_inbox(protocol: Any, limit: int) -> DatagramInbox: ...
def encode_into(protocol: Any, obj: Any, out: bytearray) -> None: ...

class ServerCounters:
    accepted: int
    requests: int
    bytes_in: int
    bytes_out: int
    high_water: int
    datagrams: int
    latency_sum: float
    refused: dict[str, int]
    errors: dict[str, int]
    expired: dict[str, int]
    accept_errors: dict[str, int]
    dropped: dict[str, int]

    def observe(self, seconds: float) -> None: ...
    def bucket_counts(self) -> tuple[int, ...]: ...

class DriverCore:
    _handler: Any
    _protocol: Any
    _respond: Any
    _idle_timeout: float | None
    _frame_timeout: float | None
    _high_water: int
    _decoder: Any
    _received: int
    _last_read: float
    _frame_mark: int
    _frame_started: float | None
    _agen: AsyncGenerator[Any, Any] | None
    _fresh: bool
    _params: RecvParams | None
    _request_deadline: float
    _out: bytearray | None
    _broken_reason: str | None
    _stopping: bool
    _lost: bool
    _close_requested: bool
    _words: Any
    _log: Any
    id: int
    state: dict[str, Any]
    _counters: ServerCounters
    _pending_since: float

    def __init__(
        self,
        handler: Any,
        protocol: Any,
        decoder: Any,
        conn_id: int,
        *,
        idle_timeout: float | None,
        frame_timeout: float | None = None,
        high_water: int = ...,
        words: Any,
        log: Any = None,
        counters: ServerCounters | None = None,
    ) -> None: ...
    def _process(self) -> Blocked | None: ...
    def _process_responses(self) -> Blocked | None: ...
    def _send_response(self, send: Any, response: Any) -> Blocked | None: ...
    def _step(self, coro: Coroutine[Any, Any, Any]) -> Blocked | None: ...
    def _on_yield(self, value: Any) -> None: ...
    def _on_return(self) -> None: ...
    def _on_error(self, exc: Exception) -> None: ...
    def _on_framing_error(self) -> None: ...
    def _close_after_error(self, exc: BaseException) -> None: ...
    def _request_close(self) -> None: ...

class AsyncIOCore(DriverCore):
    _context: contextvars.Context | None
    _eof: bool
    _loop: asyncio.AbstractEventLoop
    _task: asyncio.Task[None] | None
    _timer: asyncio.TimerHandle | None
    _timer_at: float
    _waiter: asyncio.Future[object] | None

    def _deliver(self) -> None: ...
    def _process_batch(self) -> Any: ...
    def _needs_task(self) -> bool: ...
    def _wake(self, value: object = None) -> None: ...

class AsyncIOStreamCore(AsyncIOCore):
    _admitted: bool
    _ip_token: str | bool | None
    _listener: Any
    _peer_override: Any
    _proxy: Any
    _proxy_timer: asyncio.TimerHandle | None
    _reading_paused: bool
    _refusal: str | None
    _sent_mark: int
    _transport: asyncio.Transport | None
    _write_flow: Any
    _write_timeout: float | None
    _write_timer: asyncio.TimerHandle | None
    _written: int

    def data_received(self, data: bytes) -> None: ...
    async def send_packet(self, packet: Any) -> None: ...

class AsyncIODatagramCore(AsyncIOCore):
    _address: Any
    _endpoint: Any

    async def send_packet(self, packet: Any) -> None: ...

class DatagramRouter:
    def __init__(self, endpoint: Any) -> None: ...
    def dispatch(self, data: bytes, address: Any) -> None: ...
