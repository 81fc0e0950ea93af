# cython: language_level=3, auto_pickle=False, boundscheck=False, wraparound=False
# cython: cdivision=True, embedsignature=True
"""The compiled engine: C twins of the pure-Python engine's per-message code.

Every class and function here has a twin in the pure-Python engine, named in its docstring,
which is its specification: same behaviour, same errors, same messages. A change to one is a
change to both; the whole test suite runs on each engine (``SERVER_FRAMEWORK_PURE_PYTHON=1``
selects the pure one, see ``server_framework/engine.py``).

What the C buys, per message: no interpreter dispatch; state in C struct fields instead of
slot descriptors; coroutines stepped with ``PyIter_Send`` (no ``StopIteration`` object per
step); frames cut with ``memmem`` straight out of the received buffer, and "no complete frame
yet" returned as a sentinel instead of raised.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from cpython.bytearray cimport PyByteArray_Resize

import asyncio
import sys
import time
import traceback

import structlog

from handlers.base import RecvParams
from handlers.request_response import RequestResponseHandler
from protocols import (
    BytesSerializer,
    DatagramProtocol,
    DeserializeError,
    FixedSizeFramer,
    LengthPrefixFramer,
    LineFramer,
    ProtocolError,
    SerializeError,
    StreamDecoder,
    StreamProtocol,
)
from protocols.diagnostics import SNIFF_SIZE, likely_cause
from protocols.exceptions import FrameTooLargeError, FramingError
from server_framework._asyncio_flow import BATCH_FULL, READ_HIGH_WATER
from server_framework.exceptions import BrokenResourceError, ClosedResourceError
from server_framework.metrics import LATENCY_BUCKETS
from server_framework.sockets import MAX_DATAGRAM_SIZE


cdef extern from "string.h":
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)

cdef extern from *:
    """
    static inline int sf_has_am_send(PyObject *obj) {
        PyAsyncMethods *methods = Py_TYPE(obj)->tp_as_async;
        return methods != NULL && methods->am_send != NULL;
    }
    """
    bint sf_has_am_send(object obj)

cdef extern from *:
    """
    /* The thread's async-generator "first iteration" hook, taken off and put back without
       going through sys.get/set_asyncgen_hooks (no call, no struct sequence). The thread
       state keeps its reference while the hook is off: nothing runs Python code between. */
    static inline PyObject *sf_firstiter_off(void) {
        PyThreadState *state = PyThreadState_Get();
        PyObject *saved = state->async_gen_firstiter;
        state->async_gen_firstiter = NULL;
        return saved;
    }
    static inline void sf_firstiter_restore(PyObject *saved) {
        PyThreadState *state = PyThreadState_Get();
        PyObject *current = state->async_gen_firstiter;
        state->async_gen_firstiter = saved;
        Py_XDECREF(current);
    }
    """
    PyObject* sf_firstiter_off()
    void sf_firstiter_restore(PyObject* saved)

cdef extern from *:
    """
    /* coro.send(None) without a Python-level exception: 1 (it yielded: *result), 0 (it
       returned: *result), -1 (it raised: the error is set, StopAsyncIteration included).
       What implements am_send goes through PyIter_Send; an async generator's asend object
       (no am_send on Python 3.11) through its tp_iternext, which is its send(None); anything
       else through its send method, as in the pure-Python engine. */
    static int sf_send_none(PyObject *coro, PyObject **result, PyObject *asend_type) {
        PyTypeObject *type = Py_TYPE(coro);
        PyAsyncMethods *methods = type->tp_as_async;
        PyObject *value, *kind, *error, *traceback;
        if (methods != NULL && methods->am_send != NULL) {
            return (int)PyIter_Send(coro, Py_None, result);
        }
        if ((PyObject *)type == asend_type) {
            value = type->tp_iternext(coro);
        } else {
            value = PyObject_CallMethod(coro, "send", "O", Py_None);
        }
        if (value != NULL) {
            *result = value;
            return 1;
        }
        kind = PyErr_Occurred();  /* borrowed */
        if (kind == NULL) {
            Py_INCREF(Py_None);
            *result = Py_None;
            return 0;
        }
        if (kind != PyExc_StopIteration
                && !PyErr_GivenExceptionMatches(kind, PyExc_StopIteration)) {
            return -1;
        }
        PyErr_Fetch(&kind, &error, &traceback);
        if (kind == PyExc_StopIteration
                && (error == NULL || (!PyTuple_Check(error) && !PyExceptionInstance_Check(error)))) {
            /* Not instantiated yet (CPython delays it for a plain value, e.g. what an async
               generator yielded): that value is the result (none: None), and no StopIteration
               object is made. */
            Py_DECREF(kind);
            Py_XDECREF(traceback);
            if (error == NULL) {
                Py_INCREF(Py_None);
                error = Py_None;
            }
            *result = error;
            return 0;
        }
        PyErr_NormalizeException(&kind, &error, &traceback);
        if (error == NULL) {
            Py_XDECREF(kind);
            Py_XDECREF(traceback);
            Py_INCREF(Py_None);
            *result = Py_None;
            return 0;
        }
        value = ((PyStopIterationObject *)error)->value;
        Py_INCREF(value);
        Py_XDECREF(kind);
        Py_DECREF(error);
        Py_XDECREF(traceback);
        *result = value;
        return 0;
    }
    """
    int sf_send_none(PyObject* coro, PyObject** result, PyObject* asend_type) noexcept

cdef extern from "Python.h":
    void PyErr_Fetch(PyObject** kind, PyObject** value, PyObject** tb)
    void PyErr_NormalizeException(PyObject** kind, PyObject** value, PyObject** tb)
    void PyErr_Clear()
    PyObject* PyErr_Occurred()
    bint PyErr_ExceptionMatches(object kind)
    int PyException_SetTraceback(object error, object tb) except -1
    int PyContext_Enter(object context) except -1
    int PyContext_Exit(object context) except -1
    int PyIter_Send(object iterator, object arg, PyObject** presult) except? -1
    bint PyBytes_CheckExact(object obj)
    bint PyByteArray_CheckExact(object obj)

__all__ = [
    "AsyncIOCore",
    "AsyncIODatagramCore",
    "AsyncIOStreamCore",
    "DatagramInbox",
    "DatagramRouter",
    "DriverCore",
    "FixedSizeDecoder",
    "LengthPrefixDecoder",
    "LineDecoder",
    "ServerCounters",
    "encode_into",
    "make_decoder",
    "make_inbox",
]

cdef object logger = structlog.get_logger("server_framework.servers")
cdef object now = time.monotonic
cdef object _enter_task = asyncio.tasks._enter_task
cdef object _leave_task = asyncio.tasks._leave_task
cdef Py_ssize_t _READ_HIGH_WATER = READ_HIGH_WATER
cdef Py_ssize_t _MAX_DATAGRAM = MAX_DATAGRAM_SIZE
cdef tuple DISCONNECT_ERRORS = (ConnectionError, BrokenResourceError, ClosedResourceError)
#: What a decoder's ``_take`` returns when no complete frame is buffered.
cdef object NOTHING = object()

# The kinds of blocked step (as in _driver: _STEP, _RESPOND, _SEND).
cdef object _STEP = 0
cdef object _RESPOND = 1
cdef object _SEND = 2

# What a step of a coroutine did (_send_none).
cdef enum:
    GEN_ERROR = -1
    GEN_RETURN = 0
    GEN_NEXT = 1


_namespace = {}
exec("async def agen():\n    yield\n", _namespace)
#: The type of an async generator's ``asend()`` objects (not importable from anywhere).
cdef object _ASEND_TYPE = type(_namespace["agen"]().asend(None))
del _namespace


cdef inline int _send_none(object coro, PyObject** result) noexcept:
    """``coro.send(None)``: GEN_NEXT or GEN_RETURN with ``result`` set, or GEN_ERROR with the
    error set (``_stopped()`` or ``_fetch_error()`` takes it). No exception object is made for
    a step that yields or returns, and no traceback entry for an error (Cython's ``except``
    clause would add one per step)."""
    return sf_send_none(<PyObject*>coro, result, <PyObject*>_ASEND_TYPE)


cdef inline bint _stopped() noexcept:
    """After GEN_ERROR: True (and the error cleared) if it is StopAsyncIteration."""
    cdef PyObject* kind = PyErr_Occurred()
    if kind == <PyObject*>StopAsyncIteration or PyErr_ExceptionMatches(StopAsyncIteration):
        PyErr_Clear()
        return True
    return False


cdef object _fetch_error():
    """The error ``_send_none`` left set, as an Exception; any other BaseException (e.g.
    KeyboardInterrupt) propagates, as it does from the pure-Python engine's ``except``."""
    cdef PyObject* kind = NULL
    cdef PyObject* value = NULL
    cdef PyObject* tb = NULL
    PyErr_Fetch(&kind, &value, &tb)
    PyErr_NormalizeException(&kind, &value, &tb)
    error = <object>value
    if tb != NULL:
        PyException_SetTraceback(error, <object>tb)
    Py_XDECREF(kind)
    Py_XDECREF(value)
    Py_XDECREF(tb)
    if not isinstance(error, Exception):
        raise error
    return error


cdef inline object _take_result(PyObject* result):
    value = <object>result
    Py_XDECREF(result)
    return value


def _release_frames(exc):
    """Twin of ``servers._driver._release_frames``."""
    seen = set()
    current = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


def _log_bad_message(event, exc, log=logger):
    """Twin of ``servers._driver.log_bad_message``."""
    data = exc.data if isinstance(exc, DeserializeError) else b""
    hint = likely_cause(data, peer="the client") if data else None
    if hint is None:
        log.warning(event, error=str(exc))
    else:
        log.warning(event, error=str(exc), hint=hint)


#: Handler class -> its _fast_respond answer; emptied when it reaches _FAST_TYPES_MAX classes
#: (a plain dict: a WeakKeyDictionary lookup costs a Python call and a weakref).
cdef dict _FAST_TYPES = {}
cdef Py_ssize_t _FAST_TYPES_MAX = 64


def _fast_respond(handler):
    """Twin of ``servers._driver._fast_respond`` (the answer cached per handler class)."""
    kind = type(handler)
    fast = _FAST_TYPES.get(kind)
    if fast is None:
        if len(_FAST_TYPES) >= _FAST_TYPES_MAX:
            _FAST_TYPES.clear()
        fast = _FAST_TYPES[kind] = (
            isinstance(handler, RequestResponseHandler)
            and kind.handle is RequestResponseHandler.handle
        )
    return handler.respond if fast else None


# -- decoders ---------------------------------------------------------------------------------


cdef class Source:
    """What a connection's driver takes its messages from: a stream decoder, or a datagram
    peer's inbox. ``_take()`` is ``__next__`` without the exception: ``NOTHING`` when no
    message is ready."""

    cdef object _broken  # the framing error that broke it, or None

    cdef object _take(self):
        raise NotImplementedError


cdef class CompiledDecoder(Source):
    """Twin of ``protocols.framing.StreamDecoder`` (the three stock framers' decoders).

    ``_deserialize`` None means the frame itself is the message (BytesSerializer).
    """

    cdef object _buf  # bytes or bytearray
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _max
    cdef object _deserialize

    def __init__(self, deserialize, Py_ssize_t max_frame_size):
        self._deserialize = deserialize
        self._max = max_frame_size
        self._buf = b""
        self._pos = 0
        self._broken = None

    def __iter__(self):
        return self

    def __next__(self):
        message = self._take()
        if message is NOTHING:
            raise StopIteration
        return message

    @property
    def buffered(self):
        """How many received bytes are waiting for the rest of their frame."""
        return self._size() - self._pos

    @property
    def broken(self):
        """True once a framing error made the stream unusable."""
        return self._broken is not None

    def peek(self, size=SNIFF_SIZE):
        """The first ``size`` bytes received and not decoded yet (see ``StreamDecoder.peek``)."""
        return bytes(memoryview(self._buf)[self._pos : self._pos + size])

    cdef inline Py_ssize_t _size(self):
        buf = self._buf
        if PyBytes_CheckExact(buf):
            return PyBytes_GET_SIZE(buf)
        return PyByteArray_GET_SIZE(buf)

    cdef inline const char* _data(self):
        buf = self._buf
        if PyBytes_CheckExact(buf):
            return PyBytes_AS_STRING(buf)
        return PyByteArray_AS_STRING(buf)

    cpdef feed(self, data):
        """Add received bytes (see ``StreamDecoder.feed``)."""
        if self._broken is not None:
            raise FramingError(f"decoder is unusable after an earlier error: {self._broken}")
        if not data:
            return
        cdef Py_ssize_t pos = self._pos
        buf = self._buf
        if pos == self._size():
            self._buf = data if PyBytes_CheckExact(data) else bytes(data)
            self._pos = 0
            self._rebased(pos)
            return
        if not PyByteArray_CheckExact(buf):
            buf = bytearray(memoryview(buf)[pos:])
        elif pos:
            del buf[:pos]
        buf += data
        self._buf = buf
        self._pos = 0
        self._rebased(pos)

    def close(self):
        """Drop everything not decoded yet; the decoder takes no more input."""
        self._buf = b""
        self._pos = 0
        if self._broken is None:
            self._broken = FramingError("the decoder is closed")

    cdef void _rebased(self, Py_ssize_t shift):
        pass

    cdef object _exhausted(self):
        self._buf = b""
        self._pos = 0
        return NOTHING

    cdef object _hint(self, bytes data):
        """Twin of ``StreamDecoder._hint``."""
        return likely_cause(data)

    cdef object _too_large(self, object size, bint complete):
        hint = self._hint(self.peek())
        error = FrameTooLargeError(size, self._max, complete=complete, hint=hint)
        self._broken = error
        self._buf = b""
        self._pos = 0
        return error

    cdef int _check_usable(self) except -1:
        if self._broken is not None:
            raise FramingError(f"decoder is unusable after an earlier error: {self._broken}")
        return 0

    cdef object _frame(self, Py_ssize_t start, Py_ssize_t end):
        cdef object frame
        if start == 0 and end == self._size() and PyBytes_CheckExact(self._buf):
            frame = self._buf
        else:
            frame = PyBytes_FromStringAndSize(self._data() + start, end - start)
        if self._deserialize is None:
            return frame
        return self._deserialize(frame)


cdef class LineDecoder(CompiledDecoder):
    """Twin of ``protocols.framing._LineDecoder``."""

    cdef bytes _delim
    cdef Py_ssize_t _max_pending
    cdef Py_ssize_t _scan

    def __init__(self, deserialize, Py_ssize_t max_frame_size, bytes delimiter):
        CompiledDecoder.__init__(self, deserialize, max_frame_size)
        self._delim = delimiter
        self._max_pending = max_frame_size + len(delimiter) - 1
        self._scan = 0

    cdef void _rebased(self, Py_ssize_t shift):
        self._scan -= shift

    cdef object _hint(self, bytes data):
        return likely_cause(data, framing="line", delimiter=self._delim)

    cdef object _take(self):
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t size = self._size()
        cdef Py_ssize_t dlen = PyBytes_GET_SIZE(self._delim)
        cdef const char* data = self._data()
        cdef const char* found = NULL
        cdef Py_ssize_t end, pending
        if size - self._scan >= dlen:
            found = <const char*>memmem(
                data + self._scan, <size_t>(size - self._scan), PyBytes_AS_STRING(self._delim),
                <size_t>dlen,
            )
        if found == NULL:
            pending = size - pos
            if not pending:
                self._check_usable()
                self._scan = 0
                return self._exhausted()
            if pending > self._max_pending:
                raise self._too_large(pending, False)
            self._scan = max(pos, size - dlen + 1)
            return NOTHING
        end = found - data
        if end - pos > self._max:
            raise self._too_large(end - pos, True)
        self._pos = self._scan = end + dlen
        return self._frame(pos, end)


cdef class LengthPrefixDecoder(CompiledDecoder):
    """Twin of ``protocols.framing._LengthPrefixDecoder`` (big-endian header of 1-8 bytes)."""

    cdef Py_ssize_t _hsize

    def __init__(self, deserialize, Py_ssize_t max_frame_size, Py_ssize_t header_size):
        CompiledDecoder.__init__(self, deserialize, max_frame_size)
        self._hsize = header_size

    cdef object _hint(self, bytes data):
        return likely_cause(data, framing="length-prefix")

    cdef object _take(self):
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t available = self._size() - pos
        cdef const unsigned char* header
        cdef unsigned long long size = 0
        cdef Py_ssize_t i, start, end
        if available < self._hsize:
            if not available:
                self._check_usable()
                return self._exhausted()
            return NOTHING
        header = <const unsigned char*>self._data() + pos
        for i in range(self._hsize):
            size = (size << 8) | header[i]
        if size > <unsigned long long>self._max:
            raise self._too_large(size, True)
        start = pos + self._hsize
        end = start + <Py_ssize_t>size
        if end > self._size():
            return NOTHING
        self._pos = end
        return self._frame(start, end)


cdef class FixedSizeDecoder(CompiledDecoder):
    """Twin of ``protocols.framing._FixedSizeDecoder``."""

    cdef object _take(self):
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t size = self._size()
        cdef Py_ssize_t end = pos + self._max
        if end > size:
            if pos == size:
                self._check_usable()
                return self._exhausted()
            return NOTHING
        self._pos = end
        return self._frame(pos, end)


StreamDecoder.register(CompiledDecoder)


cdef class DatagramInbox(Source):
    """Twin of ``servers._driver.DatagramInbox``: a bounded queue of datagrams, decoded when
    taken (``_decode`` None: the datagram itself is the message)."""

    cdef object _decode
    cdef Py_ssize_t _limit
    cdef list _items

    def __init__(self, decode, Py_ssize_t limit):
        self._decode = decode
        self._limit = limit
        self._items = []

    @property
    def broken(self):
        return False

    cpdef bint feed(self, datagram):
        """Queue a datagram; False (and nothing queued) when the queue is full."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(datagram)
        return True

    def __iter__(self):
        return self

    def __next__(self):
        message = self._take()
        if message is NOTHING:
            raise StopIteration
        return message

    cdef object _take(self):
        if not self._items:
            return NOTHING
        datagram = self._items.pop(0)
        if self._decode is None:
            return datagram
        return self._decode(datagram)

    @property
    def buffered(self):
        """How many datagrams wait to be handled."""
        return len(self._items)

    def take_all(self):
        """Remove and return the waiting datagrams, undecoded."""
        items = self._items
        self._items = []
        return items


cdef bint _bytes_datagrams(protocol):
    """True if ``protocol`` is exactly ``DatagramProtocol(BytesSerializer())``, no converter:
    its ``decode`` returns the datagram, its ``encode`` returns a ``bytes`` message itself."""
    return (
        type(protocol) is DatagramProtocol
        and protocol.converter is None
        and type(protocol.serializer) is BytesSerializer
    )


def make_inbox(protocol, limit):
    """Twin of ``DatagramInbox(protocol.decode, limit)`` for a datagram peer."""
    if _bytes_datagrams(protocol):
        return DatagramInbox(None, limit)  # BytesSerializer.deserialize returns the datagram
    return DatagramInbox(protocol.decode, limit)


cdef enum:
    PLAN_OWN = 0  # protocol.decoder()
    PLAN_LINE = 1
    PLAN_PREFIX = 2
    PLAN_FIXED = 3


cdef class _Plan:
    """What a protocol's connections get (worked out once per protocol object)."""

    cdef int kind
    cdef object deserialize  # None: the frame is the message (BytesSerializer)
    cdef Py_ssize_t max_frame_size
    cdef object parameter  # the delimiter, the header size or the frame size
    cdef object line_delimiter  # see _line_delimiter
    cdef Py_ssize_t prefix_size  # see _prefix_header: 0, or the header size for _append_prefixed
    cdef Py_ssize_t prefix_limit  # the largest payload that header can express


#: id(protocol) -> (protocol, its _Plan): protocols are long-lived configuration shared by
#: a server's connections; the entry keeps its protocol, so the id cannot be reused while
#: it is here, and the table is emptied when it reaches _PLANS_MAX entries.
cdef dict _PLANS = {}
cdef Py_ssize_t _PLANS_MAX = 64


cdef _Plan _plan_for(protocol):
    cdef _Plan plan
    entry = _PLANS.get(id(protocol))
    if entry is not None and (<tuple>entry)[0] is protocol:
        return <_Plan>(<tuple>entry)[1]
    plan = _Plan()
    plan.kind = PLAN_OWN
    plan.line_delimiter = _line_delimiter(protocol)
    plan.prefix_size = 0
    framer = _prefix_framer(protocol)
    if framer is not None:
        plan.prefix_size = framer.header_size
        plan.prefix_limit = min(framer._limit, sys.maxsize)
    if type(protocol) is StreamProtocol:
        framer = protocol.framer
        plan.deserialize = protocol._deserialize
        if _bytes_framer(protocol) is not None:
            plan.deserialize = None  # BytesSerializer.deserialize returns the frame itself
        kind = type(framer)
        if kind is LineFramer:
            plan.kind = PLAN_LINE
            plan.max_frame_size = framer.max_frame_size
            plan.parameter = framer.delimiter
        elif kind is LengthPrefixFramer:
            plan.kind = PLAN_PREFIX
            plan.max_frame_size = framer.max_frame_size
            plan.parameter = framer.header_size
        elif kind is FixedSizeFramer:
            plan.kind = PLAN_FIXED
            plan.parameter = framer.size
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[id(protocol)] = (protocol, plan)
    return plan


def make_decoder(protocol):
    """Twin of ``protocol.decoder()`` for a server connection: the compiled decoder of a stock
    framer (exactly ``LineFramer``, ``LengthPrefixFramer`` or ``FixedSizeFramer``), else
    ``protocol.decoder()``."""
    cdef _Plan plan = _plan_for(protocol)
    if plan.kind == PLAN_LINE:
        return LineDecoder(plan.deserialize, plan.max_frame_size, plan.parameter)
    if plan.kind == PLAN_PREFIX:
        return LengthPrefixDecoder(plan.deserialize, plan.max_frame_size, plan.parameter)
    if plan.kind == PLAN_FIXED:
        return FixedSizeDecoder(plan.deserialize, plan.parameter)
    return protocol.decoder()


# -- encoding ---------------------------------------------------------------------------------


cdef object _bytes_framer(protocol):
    """The framer when ``protocol`` is exactly a ``StreamProtocol`` of bytes through
    ``BytesSerializer`` with no converter (what the C encoders may frame), else None."""
    if (
        type(protocol) is StreamProtocol
        and protocol.converter is None
        and type(protocol.serializer) is BytesSerializer
    ):
        return protocol.framer
    return None


cdef object _line_delimiter(protocol):
    """The delimiter when ``protocol`` is bytes on a ``LineFramer`` through ``BytesSerializer``
    (exactly those classes, no converter): what ``_append_line`` frames by itself."""
    framer = _bytes_framer(protocol)
    return framer.delimiter if type(framer) is LineFramer else None


cdef inline Py_ssize_t _payload_view(object payload, const char** source) noexcept:
    """The size and (in ``source``) the bytes of a ``bytes`` or ``bytearray`` payload (see
    ``_is_line_payload``), borrowed from the object."""
    if PyBytes_CheckExact(payload):
        source[0] = PyBytes_AS_STRING(payload)
        return PyBytes_GET_SIZE(payload)
    source[0] = PyByteArray_AS_STRING(payload)
    return PyByteArray_GET_SIZE(payload)


cdef int _append_line(bytearray out, object payload, bytes delimiter) except -1:
    """``BytesSerializer`` + ``LineFramer`` ``encode_into``, for a ``bytes`` or ``bytearray``
    payload that is not ``out`` itself: the payload and the delimiter copied in, and the
    payload refused (``out`` as it was) if it contains the delimiter."""
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(out)
    cdef Py_ssize_t dlen = PyBytes_GET_SIZE(delimiter)
    cdef Py_ssize_t size
    cdef const char* source
    cdef char* data
    cdef const char* found
    size = _payload_view(payload, &source)
    PyByteArray_Resize(out, start + size + dlen)
    data = PyByteArray_AS_STRING(out)
    memcpy(data + start, source, <size_t>size)
    memcpy(data + start + size, PyBytes_AS_STRING(delimiter), <size_t>dlen)
    found = <const char*>memmem(
        data + start, <size_t>(size + dlen), PyBytes_AS_STRING(delimiter), <size_t>dlen
    )
    if found - data != start + size:
        excerpt = bytes(out[start : start + 64])
        del out[start:]
        raise SerializeError(f"payload contains the delimiter {delimiter!r}: {excerpt!r}")
    return 0


cdef object _prefix_framer(protocol):
    """The framer when ``protocol`` is bytes on a ``LengthPrefixFramer`` through
    ``BytesSerializer`` (exactly those classes, no converter): what ``_append_prefixed``
    frames by itself."""
    framer = _bytes_framer(protocol)
    return framer if type(framer) is LengthPrefixFramer else None


cdef int _append_prefixed(
    bytearray out, object payload, Py_ssize_t header_size, Py_ssize_t limit
) except -1:
    """``BytesSerializer`` + ``LengthPrefixFramer`` ``encode_into``, for a ``bytes`` or
    ``bytearray`` payload that is not ``out`` itself: the big-endian length and the payload
    copied in; a payload longer than the header can express is refused (``out`` as it was)."""
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(out)
    cdef Py_ssize_t size
    cdef const char* source
    cdef unsigned char* header
    cdef unsigned long long length
    cdef Py_ssize_t i
    size = _payload_view(payload, &source)
    if size > limit:
        raise SerializeError(f"payload of {size} bytes does not fit a {header_size}-byte header")
    PyByteArray_Resize(out, start + header_size + size)
    header = <unsigned char*>PyByteArray_AS_STRING(out) + start
    length = <unsigned long long>size
    for i in range(header_size - 1, -1, -1):
        header[i] = <unsigned char>(length & 0xFF)
        length >>= 8
    memcpy(header + header_size, source, <size_t>size)
    return 0


cdef inline bint _is_line_payload(object obj, bytearray out):
    """A payload the C encoders copy themselves: ``bytes`` or ``bytearray``, not ``out``."""
    return (PyBytes_CheckExact(obj) or PyByteArray_CheckExact(obj)) and obj is not out


cpdef encode_into(protocol, obj, bytearray out):
    """Twin of ``StreamProtocol.encode_into(obj, out)``: bytes on a ``LineFramer`` or a
    ``LengthPrefixFramer`` through ``BytesSerializer`` are framed here; every other protocol
    is asked."""
    cdef _Plan plan = _plan_for(protocol)
    if _is_line_payload(obj, out):
        if plan.line_delimiter is not None:
            _append_line(out, obj, plan.line_delimiter)
            return
        if plan.prefix_size:
            _append_prefixed(out, obj, plan.prefix_size, plan.prefix_limit)
            return
    protocol.encode_into(obj, out)


# -- the counters -----------------------------------------------------------------------------


cdef enum:
    _BUCKETS = 17  # len(LATENCY_BUCKETS), checked at import

if len(LATENCY_BUCKETS) != _BUCKETS:
    raise ImportError("_cengine was built for another LATENCY_BUCKETS: rebuild it")

cdef double _BOUNDS[_BUCKETS]
for _i, _bound in enumerate(LATENCY_BUCKETS):
    _BOUNDS[_i] = _bound


cdef inline double _clock() noexcept:
    """``time.monotonic()`` without the call: CLOCK_MONOTONIC through the vDSO."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef class ServerCounters:
    """Twin of ``servers._driver.ServerCounters``: a server's counters, its integers C fields."""

    cdef public long long accepted
    cdef public long long requests
    cdef public long long bytes_in
    cdef public long long bytes_out
    cdef public long long high_water
    cdef public long long datagrams
    cdef public double latency_sum
    cdef long long _buckets[_BUCKETS + 1]
    cdef public dict refused
    cdef public dict errors
    cdef public dict expired
    cdef public dict accept_errors
    cdef public dict dropped

    def __init__(self):
        self.refused = {}
        self.errors = {}
        self.expired = {}
        self.accept_errors = {}
        self.dropped = {}

    cdef inline void _observe(self, double seconds) noexcept:
        cdef int i = 0
        self.requests += 1
        self.latency_sum += seconds
        while i < _BUCKETS and seconds > _BOUNDS[i]:
            i += 1
        self._buckets[i] += 1

    def observe(self, double seconds):
        """Count one request handled in ``seconds``."""
        self._observe(seconds)

    def bucket_counts(self):
        """Requests per latency bucket."""
        return tuple([self._buckets[i] for i in range(_BUCKETS + 1)])


cdef inline void _bump(dict table, str key) except *:
    """Twin of ``servers._driver.bump``."""
    table[key] = table.get(key, 0) + 1


cdef Py_ssize_t _MAX_ERROR_TYPES = 64  # servers._driver.MAX_ERROR_TYPES


cdef str _error_name(object exc, dict counted):
    """Twin of ``servers._driver.error_name``."""
    kind = type(exc)
    module = kind.__module__
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    if len(counted) >= _MAX_ERROR_TYPES and name not in counted:
        return "other"
    return name


# -- the driver -------------------------------------------------------------------------------


cdef class DriverCore:
    """Twin of ``servers._driver.DriverCore``: a connection's state, and stepping its handler.

    ``ConnectionDriver`` (Python) derives from it and adds what runs once per connection or
    per wait; the per-loop classes provide ``_wake``, ``_batch_full`` and ``send_packet``.
    """

    cdef public object _handler
    cdef public object _protocol
    cdef public object _respond
    cdef public object _idle_timeout
    cdef public object _frame_timeout
    cdef public Py_ssize_t _high_water
    cdef public object _decoder
    cdef Source _source  # _decoder when it is compiled, else None
    cdef object _line_delim  # see _line_delimiter: replies framed by _append_line
    cdef Py_ssize_t _prefix_size  # see _prefix_framer: replies framed by _append_prefixed
    cdef Py_ssize_t _prefix_limit
    cdef public Py_ssize_t _received
    cdef public double _last_read
    cdef public Py_ssize_t _frame_mark
    cdef public object _frame_started
    cdef public object _agen
    cdef public bint _fresh
    cdef public object _params
    cdef public double _request_deadline
    cdef public object _out
    cdef public object _broken_reason
    cdef public bint _stopping
    cdef public bint _lost
    cdef public bint _close_requested
    cdef public object _words
    cdef public object _log  # the server's logger (servers._driver.resolve_logger)
    cdef public object id
    cdef public object state
    cdef public ServerCounters _counters
    cdef public double _pending_since  # when the request whose step blocked began (0: none)

    def __init__(
        self,
        handler,
        protocol,
        decoder,
        conn_id,
        *,
        idle_timeout,
        frame_timeout=None,
        Py_ssize_t high_water=sys.maxsize,
        words,
        log=None,
        ServerCounters counters=None,
    ):
        self._handler = handler
        self._protocol = protocol
        self._respond = _fast_respond(handler)
        self._idle_timeout = idle_timeout
        self._frame_timeout = frame_timeout
        self._high_water = high_water
        self._decoder = decoder
        self._source = decoder if isinstance(decoder, Source) else None
        cdef _Plan plan = _plan_for(protocol)
        self._line_delim = plan.line_delimiter
        self._prefix_size = plan.prefix_size
        self._prefix_limit = plan.prefix_limit
        self._received = 0
        self._last_read = now()
        self._frame_mark = -1
        self._frame_started = None
        self._agen = None
        self._fresh = False
        self._params = None
        self._request_deadline = 0.0
        self._out = None
        self._broken_reason = None
        self._stopping = False
        self._lost = False
        self._close_requested = False
        self._words = words
        self._log = logger if log is None else log
        self.id = conn_id
        self.state = {}
        self._counters = counters if counters is not None else ServerCounters()
        self._pending_since = 0.0

    cdef int _encode_into(self, object obj, bytearray out) except -1:
        """``self._protocol.encode_into(obj, out)``."""
        if _is_line_payload(obj, out):
            if self._line_delim is not None:
                return _append_line(out, obj, self._line_delim)
            if self._prefix_size:
                return _append_prefixed(out, obj, self._prefix_size, self._prefix_limit)
        self._protocol.encode_into(obj, out)
        return 0

    cdef inline object _next_request(self):
        """``next(decoder)``, with NOTHING instead of StopIteration."""
        if self._source is not None:
            return self._source._take()
        try:
            return next(self._decoder)
        except StopIteration:
            return NOTHING

    cdef inline bint _decoder_broken(self):
        if self._source is not None:
            return self._source._broken is not None
        return self._decoder.broken

    cpdef _process(self):
        """Handle every complete message received so far, synchronously while nothing blocks."""
        cdef PyObject* result = NULL
        cdef int kind
        cdef bint timed
        cdef double batch_at
        if self._respond is not None:
            return self._process_responses()
        decoder = self._decoder
        batch_at = _clock()
        while not (self._lost or self._close_requested):
            timed = False
            agen = self._agen
            if agen is None:
                if self._stopping and not decoder.buffered:
                    return None
                agen = self._agen = self._handler.handle(self)
                self._fresh = True
                # The pure engine's sys.set_asyncgen_hooks(None, finalizer) around asend():
                # the loop's "first iteration" hook off, the finalizer hook kept.
                saved = sf_firstiter_off()
                try:
                    coro = agen.asend(None)
                finally:
                    sf_firstiter_restore(saved)
            else:
                try:
                    request = self._next_request()
                except ProtocolError as exc:
                    _release_frames(exc)
                    coro = agen.athrow(exc)
                else:
                    if request is NOTHING:
                        return None
                    coro = agen.asend(request)
                    timed = True
            kind = _send_none(coro, &result)
            if kind == GEN_ERROR:
                if timed:
                    self._counters._observe(_clock() - batch_at)
                if _stopped():
                    self._returned()
                else:
                    self._failed(_fetch_error())
            else:
                value = _take_result(result)
                if kind == GEN_NEXT:
                    if timed:
                        self._pending_since = batch_at
                    return (coro, value, _STEP)
                if timed:
                    self._counters._observe(_clock() - batch_at)
                self._yielded(value)
            if self._decoder_broken():
                self._on_framing_error()
        return None

    def _process_responses(self):
        """The ``RequestResponseHandler`` path: ``respond()`` called directly, no generator."""
        cdef PyObject* result = NULL
        cdef int kind
        cdef double batch_at = _clock()
        respond = self._respond
        while not (self._lost or self._close_requested):
            error = None
            try:
                request = self._next_request()
            except ProtocolError as exc:
                _release_frames(exc)
                error = exc
            else:
                if request is NOTHING:
                    return None
            try:
                if error is None:
                    coro = respond(request, self)
                else:
                    coro = self._handler.on_bad_message(error, self)
            except Exception as exc:  # raised by respond() itself (e.g. one that is not async)
                if error is None:
                    self._counters._observe(_clock() - batch_at)
                self._failed(exc)
            else:
                kind = _send_none(coro, &result)
                if kind == GEN_ERROR:
                    if error is None:
                        self._counters._observe(_clock() - batch_at)
                    self._failed(_fetch_error())
                else:
                    value = _take_result(result)
                    if kind == GEN_NEXT:
                        if error is None:
                            self._pending_since = batch_at
                        return (coro, value, _RESPOND)
                    if error is None:
                        self._counters._observe(_clock() - batch_at)
                    if value is not None:
                        blocked = self._reply(None, value)
                        if blocked is not None:
                            return blocked
            if self._decoder_broken():
                self._on_framing_error()
        return None

    def _send_response(self, send, response):
        """Send ``respond()``'s result; the blocked send if it has to wait (``send`` None:
        ``self.send_packet``)."""
        return self._reply(send, response)

    cdef object _reply(self, object send, object response):
        """``_send_response``, called from C (no method lookup, no argument parsing)."""
        cdef PyObject* result = NULL
        cdef int kind
        out = self._out
        try:
            if out is not None:
                self._encode_into(response, out)
                if len(out) < self._high_water:
                    return None
                coro = self._batch_full()
            elif send is None and self._send_now(response):
                return None
            else:
                coro = (self.send_packet if send is None else send)(response)
        except Exception as exc:
            self._failed(exc)
            return None
        kind = _send_none(coro, &result)
        if kind == GEN_ERROR:
            self._failed(_fetch_error())
            return None
        value = _take_result(result)
        if kind == GEN_RETURN:
            return None
        return (coro, value, _SEND)

    cdef bint _send_now(self, object response) except -1:
        """Send ``response`` without a ``send_packet`` coroutine if this connection can (True:
        sent); the loop's classes that can override it."""
        return False

    def _step(self, coro):
        """Run one step of the handler's generator until it yields, returns, fails or blocks."""
        cdef PyObject* result = NULL
        cdef int kind = _send_none(coro, &result)
        if kind == GEN_ERROR:
            if _stopped():
                self._returned()
            else:
                self._failed(_fetch_error())
        else:
            value = _take_result(result)
            if kind == GEN_NEXT:
                return (coro, value, _STEP)
            self._yielded(value)
        return None

    def _on_yield(self, value):
        self._yielded(value)

    cdef int _yielded(self, object value) except -1:
        """``_on_yield``, called from C."""
        if value is not None:
            if not isinstance(value, RecvParams):
                try:  # EasyNetwork's shorthand: yield 5.0 is yield RecvParams(timeout=5.0)
                    value = _timeout_params(value)
                except (TypeError, ValueError) as exc:
                    # The generator is kept: the connection's end closes it (aclose()).
                    self._close_after_error(exc)
                    return 0
            if value.timeout is not None:
                self._request_deadline = now() + value.timeout
        self._params = value
        self._fresh = False

    def _on_return(self):
        self._returned()

    cdef int _returned(self) except -1:
        """``_on_return``, called from C."""
        fresh = self._fresh
        self._agen = None
        self._params = None
        if fresh:
            self._request_close()

    def _on_error(self, exc):
        self._failed(exc)

    cdef int _failed(self, object exc) except -1:
        """``_on_error``, called from C."""
        self._agen = None
        self._params = None
        if self._lost and isinstance(exc, DISCONNECT_ERRORS):
            self._log.debug(self._words.disconnected, error=str(exc))
            self._request_close()
        elif isinstance(exc, ProtocolError):
            _log_bad_message(self._words.bad_message, exc, self._log)
            self._request_close()
        else:
            self._close_after_error(exc)

    def _on_framing_error(self):
        self._log.warning("closing connection: the stream cannot be framed any more")
        self._request_close()

    def _close_after_error(self, exc):
        _bump(self._counters.errors, _error_name(exc, self._counters.errors))
        self._log.error(self._words.handler_failed, exc_info=exc)
        self._request_close()

    def _request_close(self):
        """Stop handling requests; the connection task then closes the connection."""
        self._close_requested = True
        self._wake()


# -- asyncio / uvloop ---------------------------------------------------------------------------


cdef class AsyncIOCore(DriverCore):
    """Twin of ``servers._asyncio.AsyncIOCore``: handling data inline, as the parked task."""

    cdef public object _context
    cdef public bint _eof
    cdef public object _loop
    cdef public object _task
    cdef public object _timer
    cdef public double _timer_at
    cdef public object _waiter

    cpdef _deliver(self):
        """New data was queued: handle it inline if the task is parked, else it will see it."""
        if self._waiter is None:
            return
        loop = self._loop
        task = self._task
        assert task is not None
        assert self._context is not None
        try:
            _enter_task(loop, task)
        except RuntimeError:
            self._wake()
            return
        try:
            # self._context.run(self._process_batch), without the bound method and the call.
            context = self._context
            PyContext_Enter(context)
            try:
                blocked = self._process_batch()
            finally:
                PyContext_Exit(context)
        finally:
            _leave_task(loop, task)
        if blocked is BATCH_FULL:
            self._wake()
        elif blocked is not None:
            self._wake(blocked)
        elif (
            self._lost or self._close_requested or self._stopping or self._eof or self._needs_task()
        ):
            self._wake()
        elif (
            self._timer is not None
            or self._params is not None
            or self._idle_timeout is not None
            or (self._frame_timeout is not None and self._decoder.buffered)
        ):
            self._arm()

    cpdef _process_batch(self):
        return self._process()

    cpdef bint _needs_task(self):
        """True if the task must run before waiting again (e.g. to drain writes)."""
        return False

    cpdef _wake(self, value=None):
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(value)


cdef class AsyncIOStreamCore(AsyncIOCore):
    """Twin of ``servers._asyncio.AsyncIOStreamCore``: ``data_received`` and the batch."""

    cdef public bint _admitted
    cdef public object _ip_token
    cdef public object _listener
    cdef public object _peer_override
    cdef public object _proxy
    cdef public object _proxy_timer
    cdef public bint _reading_paused
    cdef public object _refusal
    cdef public Py_ssize_t _sent_mark
    cdef public object _transport
    cdef public object _write_flow
    cdef public object _write_timeout
    cdef public object _write_timer
    cdef public Py_ssize_t _written

    def data_received(self, data):
        if self._proxy is not None:
            self._proxy_received(data)
            return
        cdef CompiledDecoder cdecoder = (
            <CompiledDecoder>self._source if isinstance(self._source, CompiledDecoder) else None
        )
        cdef Py_ssize_t buffered
        decoder = self._decoder
        if cdecoder is not None:
            if cdecoder._broken is not None:
                return
            cdecoder.feed(data)
        else:
            if decoder.broken:
                return
            decoder.feed(data)
        self._received += len(data)
        self._counters.bytes_in += len(data)
        if self._idle_timeout is not None:
            self._last_read = now()
        if self._waiter is not None:
            self._deliver()
        elif not self._reading_paused:
            buffered = cdecoder._size() - cdecoder._pos if cdecoder is not None else decoder.buffered
            if buffered > _READ_HIGH_WATER:
                self._reading_paused = True
                assert self._transport is not None
                self._transport.pause_reading()

    cpdef _process_batch(self):
        if self._write_flow.paused and not self._lost:
            return BATCH_FULL
        out = self._out = bytearray()
        try:
            return self._process()
        finally:
            self._out = None
            if out and not self._lost:
                transport = self._transport
                assert transport is not None
                transport.write(out)
                self._written += len(out)
                self._counters.bytes_out += len(out)
                if self._write_timer is None and transport.get_write_buffer_size():
                    self._watch_writes()

    cpdef bint _needs_task(self):
        return self._write_flow.paused

    async def send_packet(self, packet):
        """The handler's ``client.send_packet``."""
        out = self._out
        if out is not None:
            self._encode_into(packet, out)
            if len(out) >= self._high_water:
                await self._batch_full()
            return
        transport = self._transport
        if self._lost or self._close_requested or transport is None or transport.is_closing():
            raise self._closed_error()
        data = self._protocol.encode(packet)
        transport.write(data)
        self._written += len(data)
        self._counters.bytes_out += len(data)
        if self._write_timer is None and transport.get_write_buffer_size():
            self._watch_writes()
        if self._write_flow.paused:
            await self._drain()


cdef class AsyncIODatagramCore(AsyncIOCore):
    """Twin of ``servers._asyncio_datagram.AsyncIODatagramCore``: a datagram peer's client."""

    cdef public object _address
    cdef public object _endpoint
    cdef int _bytes_only  # 0: not known yet; 1: no; 2: see _bytes_datagrams

    cdef object _datagram(self, object packet):
        """``self._protocol.encode(packet)``; a ``bytes`` message through ``BytesSerializer``
        is its own datagram."""
        if self._bytes_only == 0:
            self._bytes_only = 2 if _bytes_datagrams(self._protocol) else 1
        if self._bytes_only == 2 and PyBytes_CheckExact(packet):
            return packet
        return self._protocol.encode(packet)

    cdef bint _send_now(self, object response) except -1:
        """``send_packet(response)`` without its coroutine, when it would not wait: on
        uvloop's transport (which buffers when the socket is full) of an open endpoint."""
        endpoint = self._endpoint
        transport = endpoint._transport
        if transport is None or endpoint.closed:
            return False
        data = self._datagram(response)
        transport.sendto(data, self._address)
        self._counters.bytes_out += len(data)
        return True

    async def send_packet(self, packet):
        """The handler's ``client.send_packet``."""
        data = self._datagram(packet)
        endpoint = self._endpoint
        transport = endpoint._transport
        if transport is not None and not endpoint.closed:
            transport.sendto(data, self._address)
            self._counters.bytes_out += len(data)
            return
        await endpoint.send(data, self._address)


cdef class DatagramRouter:
    """Twin of ``servers._asyncio_datagram.DatagramRouter``: a datagram for a peer that has a
    client is queued in its inbox and handled inline here (``DatagramEndpoint._dispatch``,
    ``_fed`` and the asyncio endpoint's ``_notify``, for that case); anything else (a new
    peer, a datagram too long, an endpoint that stopped receiving) goes to ``_dispatch``."""

    cdef object _endpoint
    cdef dict _clients
    cdef ServerCounters _counters
    cdef bint _rate_limited  # max_datagram_rate_per_ip: every datagram goes to _dispatch

    def __init__(self, endpoint):
        self._endpoint = endpoint
        self._clients = endpoint.clients  # the endpoint's own dict, for its whole life
        self._counters = endpoint.options.counters
        self._rate_limited = endpoint.rate is not None

    cpdef dispatch(self, data, address):
        """Route one received datagram."""
        cdef AsyncIOCore client
        cdef DatagramInbox inbox
        found = self._clients.get(address)
        if (
            found is None
            or self._rate_limited
            or not isinstance(found, AsyncIOCore)
            or len(data) > _MAX_DATAGRAM
            or not self._endpoint._receiving
        ):
            self._endpoint._dispatch(data, address)
            return
        client = <AsyncIOCore>found
        if not isinstance(client._source, DatagramInbox):
            self._endpoint._dispatch(data, address)
            return
        inbox = <DatagramInbox>client._source
        self._counters.datagrams += 1
        self._counters.bytes_in += len(data)
        if not inbox.feed(data):
            _bump(self._counters.dropped, "client_queue_size")
            self._endpoint.options.drops(reason="client queue full")
            return
        client._received += len(data)
        if client._idle_timeout is not None:
            client._last_read = now()
        if client._waiter is not None:
            client._deliver()


def _timeout_params(value):
    """``yield 5.0`` (EasyNetwork's shorthand) as ``RecvParams(timeout=5.0)``; else TypeError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return RecvParams(timeout=value)
    raise TypeError(
        f"handle() may yield None, a timeout in seconds or RecvParams, it yielded {value!r}"
    )
