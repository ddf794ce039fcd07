"""Command/response channels on top of asyncore, with asynchat's API.

``async_chat`` reads from its socket, cuts the input at a *terminator*
(a byte string, a byte count, or None for "everything") and hands the
pieces to ``collect_incoming_data()``, calling ``found_terminator()`` each
time the terminator is reached.  Output is queued with ``push()`` or
``push_with_producer()`` and sent when the socket can take it.

The names, attributes and semantics are those of the ``asynchat`` module
that Python shipped until 3.11; the implementation is this project's own
and differs where it makes the server faster or safer:

* Input is scanned in place: a read that holds many lines is cut with one
  search per line instead of re-copying the rest of the buffer each time.
* Replies pushed while input is being processed are sent together when the
  read has been handled, in one ``sendmsg()`` where the socket has it.
* A channel stops reading while more than ``ac_out_pending_limit`` bytes
  wait to be sent, so a peer that never reads cannot make it grow without
  bound; reading resumes as the output drains.

``asyncore`` is the module user code gets from ``import asyncore``: the
standard library's up to Python 3.11 and the ``pyasyncore`` package from
3.12 on, so one ``asyncore.loop()`` drives both.
"""

from __future__ import annotations

import errno
import sys
import warnings
from collections import deque
from typing import Any, Union

if sys.version_info >= (3, 12):
    import asyncore  # provided by the pyasyncore package
else:
    with warnings.catch_warnings():
        # Importing the stdlib asyncore warns on 3.10 and 3.11; our users
        # chose it knowingly, so the warning is not theirs to see.
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore

__all__ = ["async_chat", "find_prefix_at_end", "simple_producer"]

_BYTES_TYPES = (bytes, bytearray, memoryview)
_DISCONNECTED = frozenset(
    {
        errno.ECONNRESET,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.EBADF,
    }
)
# What a queued piece of output costs beyond its bytes (the bytes object and
# its deque slot): a peer that never reads while sending short commands
# must meet ac_out_pending_limit at about the memory it says.
_ITEM_COST = 64
# Input longer than this is first searched with rfind(); see _find().
_LARGE_INPUT = 4096
# How many queued buffers one sendmsg() call may gather.
_MAX_GATHER = 64

Terminator = Union[bytes, int, None]


class async_chat(asyncore.dispatcher):
    """A dispatcher that splits its input at terminators.

    Subclasses implement ``collect_incoming_data(data)`` and
    ``found_terminator()``.
    """

    # Bytes read from the socket at a time, and sent at a time.
    ac_in_buffer_size = 65536
    ac_out_buffer_size = 65536
    # Stop reading while the output waiting to be sent holds more than this
    # much memory (its bytes, plus _ITEM_COST for each queued piece).
    ac_out_pending_limit = 1 << 20

    # Str terminators and producer output are only encoded when asked to:
    # mixing str into a byte stream is usually a bug worth an exception.
    use_encoding = 0
    encoding = "latin-1"

    terminator: Terminator = None

    # Per-connection state that starts out the same for every channel lives
    # here until a channel changes it: an instance dict of at most 30 keys
    # is shared-key (compact) in CPython, which matters with many idle
    # connections.
    #
    # Unprocessed input is _in_buffer[_in_pos:]; see ac_in_buffer.
    _in_buffer = b""
    _in_pos = 0
    # Memory held by the output in producer_fifo: its bytes plus
    # _ITEM_COST per queued piece (producers themselves not counted).
    _out_pending = 0
    # True while input is being processed: push() then only queues.
    _deferring_send = False
    _input_closed = False

    def __init__(self, sock: Any = None, map: dict | None = None) -> None:
        self.incoming: list = []
        self.producer_fifo: deque[Any] = deque()
        super().__init__(sock, map)

    @property
    def ac_in_buffer(self) -> bytes:
        """The input received but not yet handed to the collector."""
        if self._in_pos:
            self._in_buffer = self._in_buffer[self._in_pos :]
            self._in_pos = 0
        return self._in_buffer

    @ac_in_buffer.setter
    def ac_in_buffer(self, value: bytes) -> None:
        self._in_buffer = value
        self._in_pos = 0

    def collect_incoming_data(self, data: bytes) -> None:
        """Take a piece of input that precedes the terminator."""
        raise NotImplementedError("must be implemented in subclass")

    def _collect_incoming_data(self, data: bytes) -> None:
        self.incoming.append(data)

    def _get_data(self) -> bytes:
        data = b"".join(self.incoming)
        del self.incoming[:]
        return data

    def found_terminator(self) -> None:
        """Called each time the terminator is reached."""
        raise NotImplementedError("must be implemented in subclass")

    def set_terminator(self, term: Terminator | str) -> None:
        """Set the input delimiter: bytes, a byte count, or None."""
        if isinstance(term, str) and self.use_encoding:
            term = bytes(term, self.encoding)
        elif isinstance(term, int) and term < 0:
            raise ValueError("the number of received bytes must be positive")
        self.terminator = term  # type: ignore[assignment]

    def get_terminator(self) -> Terminator:
        return self.terminator

    # -- input ---------------------------------------------------------

    def handle_read(self) -> None:
        try:
            data = self.recv(self.ac_in_buffer_size)
        except BlockingIOError:
            return
        except OSError:
            self.handle_error()
            return
        if not data or self._input_closed:
            return
        if isinstance(data, str) and self.use_encoding:
            data = bytes(data, self.encoding)
        if self._in_pos < len(self._in_buffer):
            self._in_buffer = self._in_buffer[self._in_pos :] + data
        else:
            self._in_buffer = data
        self._in_pos = 0
        self._process_input()

    def _process_input(self) -> None:
        """Run the buffered input through the terminator logic, then send.

        Replies pushed meanwhile are sent once, at the end.  The send also
        happens when a callback raises, so a reply pushed before the
        exception still leaves.
        """
        if self._deferring_send:
            return
        self._deferring_send = True
        try:
            self._split_input()
        finally:
            self._deferring_send = False
            self.initiate_send()

    def _split_input(self) -> None:
        # The callbacks may change the terminator, the buffer (through
        # ac_in_buffer) or close the channel, so everything is re-read
        # from self on each turn.
        while self._in_pos < len(self._in_buffer):
            if self._out_pending > self.ac_out_pending_limit:
                return  # resumed by handle_write() once output drains
            buffer, pos = self._in_buffer, self._in_pos
            terminator = self.get_terminator()
            if not terminator:
                self._in_buffer, self._in_pos = b"", 0
                self.collect_incoming_data(buffer[pos:] if pos else buffer)
            elif isinstance(terminator, int):
                self._split_counted(buffer, pos, terminator)
            else:
                index = _find(buffer, terminator, pos)
                if index < 0:
                    self._keep_partial_terminator(buffer, pos, terminator)
                    return
                self._in_pos = index + len(terminator)
                if index > pos:
                    self.collect_incoming_data(buffer[pos:index])
                self.found_terminator()

    def _split_counted(self, buffer: bytes, pos: int, count: int) -> None:
        available = len(buffer) - pos
        if available < count:
            self._in_buffer, self._in_pos = b"", 0
            self.collect_incoming_data(buffer[pos:])
            self.terminator = count - available
        else:
            self._in_pos = pos + count
            self.collect_incoming_data(buffer[pos : pos + count])
            self.terminator = 0
            self.found_terminator()

    def _keep_partial_terminator(self, buffer: bytes, pos: int, term: bytes) -> None:
        """Collect all but a trailing start of the terminator, and keep that."""
        keep = find_prefix_at_end(buffer[-len(term) :], term)
        end = max(len(buffer) - keep, pos)
        self._in_buffer, self._in_pos = buffer[end:], 0
        if end > pos:
            self.collect_incoming_data(buffer[pos:end])

    def _close_input(self) -> None:
        """Drop buffered input and ignore whatever the peer sends from now."""
        self._input_closed = True
        self._in_buffer, self._in_pos = b"", 0

    # -- output --------------------------------------------------------

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for sending."""
        if not isinstance(data, _BYTES_TYPES):
            raise TypeError(f"push() takes bytes-like data, not {type(data).__name__}")
        self.producer_fifo.append(data)
        self._out_pending += len(data) + _ITEM_COST
        if not self._deferring_send:
            self.initiate_send()

    def push_with_producer(self, producer: Any) -> None:
        """Queue an object whose ``more()`` returns bytes until b''."""
        self.producer_fifo.append(producer)
        if not self._deferring_send:
            self.initiate_send()

    def close_when_done(self) -> None:
        """Close the channel once everything queued has been sent."""
        self.producer_fifo.append(None)

    # readable() and writable() run for every channel on every pass of the
    # loop: keep them to a few attribute lookups.
    def readable(self) -> bool:
        return self._out_pending <= self.ac_out_pending_limit and not self._input_closed

    def writable(self) -> Any:
        return self.producer_fifo or not self.connected

    def handle_write(self) -> None:
        self.initiate_send()
        if (
            self._in_pos < len(self._in_buffer)
            and self._out_pending <= self.ac_out_pending_limit
        ):
            self._process_input()

    def handle_close(self) -> None:
        self.close()

    def initiate_send(self) -> None:
        """Send queued output until the socket would block."""
        fifo = self.producer_fifo
        while fifo and self.connected:
            first = fifo[0]
            if first is None:
                fifo.popleft()
                self.handle_close()
                return
            if not isinstance(first, _BYTES_TYPES):
                self._run_producer(first)
                continue
            if not first:
                fifo.popleft()
                self._out_pending -= _ITEM_COST
                continue
            try:
                sent = self._send_queued()
            except OSError:
                self.handle_error()
                return
            if not sent:
                return
            self._drop_sent(sent)

    def _run_producer(self, producer: Any) -> None:
        data = producer.more()
        if not data:
            self.producer_fifo.popleft()
            return
        if isinstance(data, str) and self.use_encoding:
            data = bytes(data, self.encoding)
        self.producer_fifo.appendleft(data)
        self._out_pending += len(data) + _ITEM_COST

    def _send_queued(self) -> int:
        """Send from the head of the queue; return the byte count sent."""
        fifo = self.producer_fifo
        budget = self.ac_out_buffer_size
        sendmsg = getattr(self.socket, "sendmsg", None)
        if sendmsg is None or len(fifo) == 1:
            first = fifo[0]
            if len(first) > budget:
                first = memoryview(first)[:budget]
            return self.send(first)
        buffers: list[Any] = []
        total = 0
        for item in fifo:
            if not isinstance(item, _BYTES_TYPES) or len(buffers) == _MAX_GATHER:
                break
            buffers.append(item)
            total += len(item)
            if total >= budget:
                break
        try:
            return sendmsg(buffers)
        except BlockingIOError:
            return 0
        except OSError as err:
            if err.errno in _DISCONNECTED:
                self.handle_close()
                return 0
            raise

    def _drop_sent(self, sent: int) -> None:
        """Forget the first ``sent`` bytes of the queue."""
        self._out_pending -= sent
        fifo = self.producer_fifo
        while sent:
            first = fifo[0]
            if sent < len(first):
                fifo[0] = memoryview(first)[sent:]
                return
            sent -= len(first)
            fifo.popleft()
            self._out_pending -= _ITEM_COST

    def discard_buffers(self) -> None:
        """Forget all buffered input and queued output."""
        self._in_buffer, self._in_pos = b"", 0
        del self.incoming[:]
        self.producer_fifo.clear()
        self._out_pending = 0


class simple_producer:
    """A producer that hands out ``data`` in pieces of ``buffer_size``."""

    def __init__(self, data: bytes, buffer_size: int = 512) -> None:
        self.data = data
        self.buffer_size = buffer_size

    def more(self) -> bytes:
        piece = self.data[: self.buffer_size]
        self.data = self.data[self.buffer_size :]
        return piece


def _find(buffer: bytes, terminator: bytes, start: int) -> int:
    """buffer.find(terminator, start), faster where it is not there.

    On a large buffer without the terminator - the middle of a message -
    rfind() answers two to three times faster than find().
    """
    if len(buffer) - start > _LARGE_INPUT and buffer.rfind(terminator, start) < 0:
        return -1
    return buffer.find(terminator, start)


def find_prefix_at_end(haystack: bytes, needle: bytes) -> int:
    """Length of the longest proper prefix of needle that ends haystack."""
    length = len(needle) - 1
    while length and not haystack.endswith(needle[:length]):
        length -= 1
    return length
