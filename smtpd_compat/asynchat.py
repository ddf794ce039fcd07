"""Command/response channels on top of asyncore, with asynchat's API.

``async_chat`` reads from its socket, cuts the input at a *terminator*
(a byte string, a byte count, or None for "everything") and hands the
pieces to ``collect_incoming_data()``, calling ``found_terminator()`` each
time the terminator is reached.  Output is queued with ``push()`` or
``push_with_producer()`` and sent at once, as far as the socket takes it;
the rest goes out when the socket is writable.

The names, attributes and semantics are those of the ``asynchat`` module
that Python shipped until 3.11; the implementation is this project's own.
A subclass sees the calls that module made, with the same arguments and
at the same moments: ``push()`` sends through ``self.send()`` one piece at
a time, as before.  Two things are faster, and only where no subclass can
tell:

* Input is scanned in place: a read that holds many lines is cut with one
  search per line instead of re-copying the rest of the buffer each time.
* An ``smtpd_compat.SMTPChannel`` whose class overrides none of its
  methods but ``smtp_*`` commands (and whose instance replaces none of
  the output and input hooks) sends the replies to one read
  together, in one ``sendmsg()`` where the socket is a plain socket.  Any
  code of the user's (a command of its own, ``process_message()``) runs
  after what was queued has been sent, and its own pushes leave at once;
  ``close()`` sends what is still queued before closing.

A channel stops reading while more than ``ac_out_pending_limit`` bytes
wait to be sent, so a peer that never reads cannot make it grow without
bound; reading resumes as the output drains.

``asyncore`` is the module user code gets from ``import asyncore``: the
standard library's up to Python 3.11 and the ``pyasyncore`` package from
3.12 on, so one ``asyncore.loop()`` drives both.  Up to 3.11,
``async_chat`` also derives from the standard library's
``asynchat.async_chat``, so that ``isinstance()`` checks and mixins
written against that class keep working.
"""

from __future__ import annotations

import errno
import socket
import sys
import warnings
import weakref
from collections import deque
from typing import Any, Callable, Union

if sys.version_info >= (3, 12):
    import asyncore  # provided by the pyasyncore package

    _Base: Any = asyncore.dispatcher
else:
    with warnings.catch_warnings():
        # Importing the stdlib asyncore and asynchat warns on 3.10 and 3.11;
        # our users chose them knowingly, so the warning is not theirs.
        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat as _stdlib_asynchat
        import asyncore

    _Base = _stdlib_asynchat.async_chat  # type: ignore[attr-defined]

# Up to 3.11, a test double put in place of the standard library's
# async_chat.push (mock.patch("asynchat.async_chat.push")) is called by
# our push() as well, as it reached every smtpd channel then.
_STDLIB_PUSH = getattr(_Base, "push", None)

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
# Gathered sends are only used on sockets whose sendmsg() is the kernel's:
# an ssl.SSLSocket, for one, refuses sendmsg().
_PLAIN_SENDMSG = socket.socket.sendmsg

Terminator = Union[bytes, int, None]


class async_chat(_Base):  # type: ignore[valid-type,misc]
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

    # The class whose channels may batch their output (see the module
    # docstring), and its methods (name -> function) that must still be
    # in place for it, checked on every use so that a test double patched
    # in later counts too.  A subclass that overrides any method of that
    # class other than a command (smtp_*) gets the one-send-per-push
    # behaviour of Python's asynchat.  None: a plain async_chat never
    # batches, since its collect_incoming_data() and found_terminator()
    # are the user's.
    _batching_class: type | None = None
    _batching_methods: dict[str, Callable[..., Any]] = {}

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
    # True while replies are only queued, to be sent together later.
    _deferring_send = False
    _input_closed = False
    # A second terminator that only counts at the very start of the input
    # after it was set (an SMTP message that is empty ends with ".\r\n",
    # the CRLF before the dot being the one that ended DATA).  It is
    # forgotten as soon as anything else arrives.
    _initial_terminator: bytes | None = None

    def __init__(self, sock: Any = None, map: dict | None = None) -> None:
        self.incoming: list = []
        self.producer_fifo: deque[Any] = deque()
        asyncore.dispatcher.__init__(self, sock, map)

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
        if self._initial_terminator is not None:
            # Only when set: an idle channel keeps the class default, so
            # that its attributes stay few enough for CPython to share the
            # dictionary keys of all channels (memory per connection).
            self._initial_terminator = None

    def get_terminator(self) -> Terminator:
        return self.terminator

    def _ac_batching(self) -> bool:
        """Whether replies may be batched: see _batching_class."""
        base = self._batching_class
        if base is None:
            return False
        cls = type(self)
        adds_only_commands = _ADDS_ONLY_COMMANDS.get(cls)
        if adds_only_commands is None:
            adds_only_commands = _adds_only_commands(cls, base)
            _ADDS_ONLY_COMMANDS[cls] = adds_only_commands
        if not adds_only_commands:
            return False
        expected = self._batching_methods
        instance_attributes = self.__dict__
        for name, function in expected.items():
            if getattr(cls, name) is not function or name in instance_attributes:
                return False
        return True

    # -- input ---------------------------------------------------------

    def handle_read(self) -> None:
        try:
            data = self.recv(self.ac_in_buffer_size)
        except BlockingIOError:
            return
        except OSError:
            self.handle_error()
            return
        if self._input_closed:
            return
        if not data:
            # The peer is gone (recv() has called handle_close()), but
            # input still buffered - after an ExitNow, say - is handled
            # all the same, as asynchat did.
            if self._in_pos < len(self._in_buffer):
                self.__process_input()
            return
        if isinstance(data, str) and self.use_encoding:
            data = bytes(data, self.encoding)
        if self._in_pos < len(self._in_buffer):
            self._in_buffer = self._in_buffer[self._in_pos :] + data
        else:
            self._in_buffer = data
        self._in_pos = 0
        self.__process_input()

    def __process_input(self) -> None:
        """Run the buffered input through the terminator logic.

        Where replies may be batched, they are sent once, at the end (also
        when a callback raises, so that a reply pushed before the
        exception still leaves).
        """
        if self._deferring_send:
            return
        if not self._ac_batching():
            self.__split_input()
            return
        self._deferring_send = True
        try:
            self.__split_input()
        finally:
            self._deferring_send = False
            self.__send_all_queued(stop_at_close_mark=True)

    def _ac_run_unbatched(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call code that is not ours while replies are being batched.

        What was queued is sent first, and whatever ``function`` pushes
        leaves at once, as with Python's asynchat: the user's code may
        close the channel, raise ExitNow or block.
        """
        if not self._deferring_send:
            return function(*args)
        self.__send_all_queued(stop_at_close_mark=True)
        self._deferring_send = False
        try:
            return function(*args)
        finally:
            self._deferring_send = True

    def __split_input(self) -> None:
        # As in Python's asynchat, each callback sees ac_in_buffer still
        # holding the input it is given, and the buffer is cut after it
        # returns.  The callbacks may change the terminator, the buffer
        # or close the channel, so everything is re-read on each turn.
        while self._in_pos < len(self._in_buffer):
            if self._out_pending > self.ac_out_pending_limit and self.producer_fifo:
                return  # resumed by handle_write() once output drains
            buffer, pos = self._in_buffer, self._in_pos
            terminator = self.get_terminator()
            if not terminator:
                self.collect_incoming_data(buffer[pos:] if pos else buffer)
                self._in_buffer, self._in_pos = b"", 0
                continue
            if isinstance(terminator, int):
                self.__split_counted(buffer, pos, terminator)
                continue
            initial = self._initial_terminator
            if initial is not None:
                head = buffer[pos : pos + len(initial)]
                if head == initial:
                    self._initial_terminator = None
                    self.__consumed(buffer, pos, pos + len(initial))
                    self.found_terminator()
                    continue
                if initial.startswith(head):
                    return  # too little input yet to tell
                self._initial_terminator = None
            index = _find(buffer, terminator, pos)
            if index < 0:
                self.__collect_all_but_partial_terminator(buffer, pos, terminator)
                return
            if index > pos:
                self.collect_incoming_data(buffer[pos:index])
            self.__consumed(buffer, pos, index + len(terminator))
            self.found_terminator()

    def __consumed(self, buffer: bytes, pos: int, end: int) -> None:
        """Drop the input up to ``end`` of ``buffer``, read from ``pos``."""
        if self._in_buffer is buffer and self._in_pos == pos:
            self._in_pos = end
        else:  # a callback set ac_in_buffer: cut that, as asynchat did
            self.ac_in_buffer = self.ac_in_buffer[end - pos :]

    def __split_counted(self, buffer: bytes, pos: int, count: int) -> None:
        available = len(buffer) - pos
        if available < count:
            self.collect_incoming_data(buffer[pos:])
            self._in_buffer, self._in_pos = b"", 0
            self.terminator = self.terminator - available  # type: ignore[operator]
        else:
            self.collect_incoming_data(buffer[pos : pos + count])
            self.__consumed(buffer, pos, pos + count)
            self.terminator = 0
            self.found_terminator()

    def __collect_all_but_partial_terminator(
        self, buffer: bytes, pos: int, term: bytes
    ) -> None:
        """Collect the input but a trailing start of the terminator."""
        tail = buffer[max(pos, len(buffer) - len(term)) :]
        end = len(buffer) - find_prefix_at_end(tail, term)
        if end > pos:
            self.collect_incoming_data(buffer[pos:end])
            self.__consumed(buffer, pos, end)

    def _ac_close_input(self) -> None:
        """Drop buffered input and ignore whatever the peer sends from now."""
        self._input_closed = True
        self._in_buffer, self._in_pos = b"", 0

    # -- output --------------------------------------------------------

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for sending, and send what the socket takes now."""
        if _STDLIB_PUSH is not None and _Base.push is not _STDLIB_PUSH:
            # patched by a test: see _STDLIB_PUSH
            return _Base.push(self, data)
        if not isinstance(data, _BYTES_TYPES):
            # The two-argument form is the message Python's asynchat gave.
            raise TypeError("data argument must be byte-ish (%r)", type(data))
        fifo = self.producer_fifo
        piece_size = self.ac_out_buffer_size
        if len(data) > piece_size:
            pieces = [
                data[start : start + piece_size]
                for start in range(0, len(data), piece_size)
            ]
            fifo.extend(pieces)
            self._out_pending += len(data) + _ITEM_COST * len(pieces)
        else:
            fifo.append(data)
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
        # (Input that comes after _ac_close_input() is read and dropped.)
        return self._out_pending <= self.ac_out_pending_limit or not self.producer_fifo

    def writable(self) -> Any:
        return self.producer_fifo or not self.connected

    def handle_write(self) -> None:
        self.initiate_send()
        if self._in_pos < len(self._in_buffer) and self.readable():
            self.__process_input()

    def handle_close(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket, after sending what batching still held back."""
        if self._deferring_send and self.producer_fifo and self.connected:
            self.__send_before_close()
        asyncore.dispatcher.close(self)

    def initiate_send(self) -> None:
        """Send queued output, as far as the socket takes it now."""
        if self._ac_batching():
            self.__send_all_queued()
        else:
            self.__send_one_piece()
        if not self.producer_fifo:
            self._out_pending = 0

    def __send_one_piece(self) -> None:
        """Python's asynchat way: at most one ``self.send()`` per call."""
        fifo = self.producer_fifo
        while fifo and self.connected:
            head = fifo[0]
            if not head:  # an empty piece, or the close_when_done() mark
                fifo.popleft()
                self._out_pending -= _ITEM_COST
                if head is None:
                    self.handle_close()
                    return
            limit = self.ac_out_buffer_size
            try:
                piece = head[:limit]
            except TypeError:  # a producer
                self.__run_producer(head)
                continue
            if isinstance(piece, str) and self.use_encoding:
                piece = bytes(piece, self.encoding)
            try:
                sent = self.send(piece)
            except OSError:
                self.handle_error()
                return
            if sent:
                if sent < len(piece) or limit < len(head):
                    fifo[0] = head[sent:]
                else:
                    fifo.popleft()
                    self._out_pending -= _ITEM_COST
                self._out_pending -= sent
            return

    def __send_all_queued(self, stop_at_close_mark: bool = False) -> None:
        """Send until the socket would block, gathering queued pieces.

        With ``stop_at_close_mark``, a close_when_done() mark is left for
        the loop's next write event, where asynchat closed the channel.
        """
        fifo = self.producer_fifo
        while fifo and self.connected:
            first = fifo[0]
            if first is None:
                if stop_at_close_mark:
                    return
                fifo.popleft()
                self.handle_close()
                return
            if not isinstance(first, _BYTES_TYPES):
                self.__run_producer(first)
                continue
            if not first:
                fifo.popleft()
                self._out_pending -= _ITEM_COST
                continue
            try:
                sent = self.__send_queued()
            except OSError:
                self.handle_error()
                return
            if not sent:
                return
            self.__drop_sent(sent)

    def __run_producer(self, producer: Any) -> None:
        data = producer.more()
        if not data:
            self.producer_fifo.popleft()
            return
        if isinstance(data, str) and self.use_encoding:
            data = bytes(data, self.encoding)
        self.producer_fifo.appendleft(data)
        self._out_pending += len(data) + _ITEM_COST

    def __send_queued(self) -> int:
        """Send from the head of the queue; return the byte count sent."""
        fifo = self.producer_fifo
        budget = self.ac_out_buffer_size
        sock = self.socket
        if len(fifo) == 1 or getattr(type(sock), "sendmsg", None) is not _PLAIN_SENDMSG:
            first = fifo[0]
            if len(first) > budget:
                first = memoryview(first)[:budget]
            return self.send(first)
        buffers = _gather(fifo, budget)
        try:
            return sock.sendmsg(buffers)
        except BlockingIOError:
            return 0
        except OSError as err:
            if err.errno in _DISCONNECTED:
                self.handle_close()
                return 0
            raise

    def __send_before_close(self) -> None:
        """Send held-back replies without blocking; errors end it quietly."""
        fifo = self.producer_fifo
        try:
            while fifo and isinstance(fifo[0], _BYTES_TYPES):
                sent = self.socket.send(fifo[0])
                if not sent:
                    return
                self.__drop_sent(sent)
        except OSError:
            return

    def __drop_sent(self, sent: int) -> None:
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


# Classes (weakly held) -> whether they add nothing to _batching_class but
# commands, new names and dunders.
_ADDS_ONLY_COMMANDS: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _adds_only_commands(cls: type, base: type) -> bool:
    """Whether ``cls`` overrides no method of ``base`` but smtp_* ones."""
    if base not in cls.__mro__:
        return False
    for klass in cls.__mro__:
        if klass is base:
            return True
        for name, value in vars(klass).items():
            if name.startswith("smtp_") or (
                name.startswith("__") and name.endswith("__")
            ):
                continue
            if hasattr(base, name) and (
                callable(value) or isinstance(value, (property, classmethod))
            ):
                return False
    return True  # pragma: no cover - base is in the MRO


def _gather(fifo: deque[Any], budget: int) -> list[Any]:
    """The queued byte pieces at the head of ``fifo`` for one sendmsg()."""
    buffers: list[Any] = []
    total = 0
    for item in fifo:
        if not isinstance(item, _BYTES_TYPES) or len(buffers) == _MAX_GATHER:
            break
        buffers.append(item)
        total += len(item)
        if total >= budget:
            break
    return buffers


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
