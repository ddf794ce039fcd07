#!/usr/bin/env python3
"""Record the hook calls of scripted SMTP sessions, as JSON.

Run it under CPython 3.11 with ``--impl stdlib`` to record the reference
(the interpreter's own smtpd, asynchat and asyncore, plus Python 3.10's
smtpd.py for MailmanProxy, loaded from ``--mailman-reference``), or under
any interpreter with ``--impl compat`` to record smtpd_compat.  The
sessions come from scenarios.py; compare.py compares two recordings.
Standard library only.

Each session gets a server subclass and a channel subclass built from the
session's behaviours (the "mods" below) and then wrapped by
``instrument()``: every method a subclass of SMTPChannel, SMTPServer,
DebuggingServer, PureProxy, MailmanProxy, async_chat or asyncore.dispatcher
can override is replaced by a wrapper that records the call, its
arguments, its result or exception, and the channel attributes that
changed since the previous hook call.  The client runs in the same thread:
it writes one step, waits until the server's socket has the bytes, then
runs ``asyncore.loop(timeout=0, count=1)`` until a pass of the loop calls
no hook except readable()/writable(), and reads what the server sent.  So
each step arrives in one read on both sides and no normalisation of read
chunking is needed.

Event kinds (lists, compared as they are):

``["call", depth, "ch0.push", args]`` followed by nested events and
``["return", depth, "ch0.push", result]``; a call with no nested event is
folded into ``["call", depth, name, args, result]``, and an exception gives
``"raise", exception`` in place of the result.
``["attrs", "ch0", {name: value}]``  channel attributes that changed
``["out", "stdout"|"debug", text]``  print output and DEBUGSTREAM output
``["warn", category, message, where]``
``["step", n, client, action]`` / ``["client", n, received, state]``
``["loop", outcome]``  an exception that ended asyncore.loop()
``["mailman", ...]``  calls into the fake Mailman package

Normalised: port numbers (``<sport>``, ``<cport0>``...), object addresses
(``0x?``), the host name (socket.getfqdn is patched), time.ctime() text,
traceback details in log lines (``[traceback]``), and the results of
readable()/writable() (their truth value only).
"""

import argparse
import collections
import importlib.util
import io
import json
import os
import re
import select
import socket
import sys
import tempfile
import textwrap
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import scenarios

FQDN = "fqdn.example"
MISSING = "<missing>"

# The implementation under test, set by load_implementation().
smtpd = None
asynchat = None
asyncore = None
smtpd310 = None

# ---------------------------------------------------------------------------
# What is instrumented
# ---------------------------------------------------------------------------

DISPATCHER_HOOKS = [
    "readable",
    "writable",
    "handle_read_event",
    "handle_write_event",
    "handle_expt_event",
    "handle_connect_event",
    "handle_error",
    "handle_expt",
    "handle_read",
    "handle_write",
    "handle_connect",
    "handle_accept",
    "handle_accepted",
    "handle_close",
    "close",
    "send",
    "recv",
    "accept",
    "bind",
    "listen",
    "create_socket",
    "set_socket",
    "set_reuse_addr",
    "add_channel",
    "del_channel",
    "log",
    "log_info",
]
ASYNCHAT_HOOKS = [
    "collect_incoming_data",
    "_collect_incoming_data",
    "_get_data",
    "found_terminator",
    "set_terminator",
    "get_terminator",
    "push",
    "push_with_producer",
    "close_when_done",
    "initiate_send",
    "discard_buffers",
]
CHANNEL_HOOKS = (
    ["__init__", "_set_post_data_state", "_set_rset_state"]
    + ["_strip_command_keyword", "_getaddr", "_getparams"]
    + ASYNCHAT_HOOKS
    + DISPATCHER_HOOKS
)
SERVER_HOOKS = [
    "__init__",
    "process_message",
    "_print_message_content",
    "_deliver",
] + DISPATCHER_HOOKS
# Called on every pass of the loop: their results are recorded as truth
# values, and a pass that calls nothing else counts as idle.
POLL_HOOKS = frozenset({"readable", "writable"})

# Channel attributes recorded (when they change) at each hook call.
CHANNEL_ATTRS = [
    "smtp_state",
    "seen_greeting",
    "extended_smtp",
    "mailfrom",
    "rcpttos",
    "require_SMTPUTF8",
    "mail_options",
    "rcpt_options",
    "num_bytes",
    "received_lines",
    "received_data",
    "terminator",
    "ac_in_buffer",
    "producer_fifo",
    "connected",
    "command_size_limits",
]


def read_attr(obj, name):
    """obj.name without dispatcher.__getattr__ (which warns) or side effects
    beyond a property's getter; MISSING when there is no such attribute."""
    try:
        instance_dict = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        instance_dict = {}
    for klass in type(obj).__mro__:
        if name in klass.__dict__:
            value = klass.__dict__[name]
            if isinstance(value, property):
                try:
                    return value.__get__(obj, type(obj))
                except Exception as exc:  # noqa: BLE001 - recorded, not hidden
                    return "<%s>" % type(exc).__name__
            if hasattr(value, "__set__") and hasattr(value, "__get__"):
                return value.__get__(obj, type(obj))
            break
    if name in instance_dict:
        return instance_dict[name]
    for klass in type(obj).__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return MISSING


# ---------------------------------------------------------------------------
# The recorder
# ---------------------------------------------------------------------------

_TB_FRAMES = re.compile(r"(?:\[[^\[\]|]*\|[^\[\]|]*\|\d+\] ?)+")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_CTIME = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}")


class Recorder:
    """Collects the events of one session."""

    def __init__(self):
        self.events = []
        self.depth = 0
        self.active = False
        self.activity = 0
        self.tags = {}
        self.keep = []
        self.counters = collections.Counter()
        self.snapshots = {}
        self.ports = []
        self.special = {}
        self.initialising = set()
        self.fingerprints = {}

    # -- naming --------------------------------------------------------

    def tag_of(self, obj, role):
        tag = self.tags.get(id(obj))
        if tag is None:
            number = self.counters[role]
            self.counters[role] += 1
            tag = role if role == "srv" else "%s%d" % (role, number)
            self.tags[id(obj)] = tag
            self.keep.append(obj)  # ids stay unique while recording
        return tag

    def add_port(self, port, name):
        self.ports.append((str(port), re.compile(r"\b%d\b" % port), name))

    def scrub(self, text, ctime=False):
        # (substring tests first: this runs for every recorded value)
        if "|" in text:
            text = _TB_FRAMES.sub("[traceback]", text)
        if "0x" in text:
            text = _ADDRESS.sub("0x?", text)
        if ctime:
            text = _CTIME.sub("<ctime>", text)
        for digits, pattern, name in self.ports:
            if digits in text:
                text = pattern.sub(name, text)
        return text

    def norm(self, value, truth=False):
        """A deterministic, comparable text for a value."""
        if truth:
            return "True" if value else "False"
        return self.scrub(self._norm(value, 0))

    def _norm(self, value, level):
        if level > 6:
            return "..."
        if value is None or isinstance(
            value, (bool, int, float, str, bytes, bytearray)
        ):
            return repr(value)
        if isinstance(value, memoryview):
            return "memoryview(%r)" % value.tobytes()
        if isinstance(value, socket.socket):
            return "<socket>"
        tag = self.tags.get(id(value))
        if tag is not None:
            return "<%s>" % tag
        name = self.special.get(id(value))
        if name is not None:
            return name
        if isinstance(value, BaseException):
            return "%s(%r)" % (type(value).__name__, str(value))
        if isinstance(value, tuple):
            inner = [self._norm(item, level + 1) for item in value]
            return "(%s%s)" % (", ".join(inner), "," if len(inner) == 1 else "")
        if isinstance(value, list):
            return "[%s]" % ", ".join(self._norm(item, level + 1) for item in value)
        if isinstance(value, collections.deque):
            return "deque([%s])" % ", ".join(
                self._norm(item, level + 1) for item in value
            )
        if isinstance(value, dict):
            items = sorted(
                (self._norm(k, level + 1), self._norm(v, level + 1))
                for k, v in value.items()
            )
            return "{%s}" % ", ".join("%s: %s" % item for item in items)
        if isinstance(value, type):
            return "<class %s>" % value.__name__
        return "<%s>" % type(value).__name__

    def norm_fifo(self, fifo):
        """producer_fifo with its bytes-like items as bytes."""
        items = []
        for item in fifo:
            if isinstance(item, (bytes, bytearray, memoryview)):
                items.append(repr(bytes(item)))
            elif item is None:
                items.append("None")
            else:
                items.append("<%s>" % type(item).__name__)
        return self.scrub("[%s]" % ", ".join(items))

    # -- events --------------------------------------------------------

    def emit(self, event, idle=False):
        if not idle:
            self.activity += 1
        self.events.append(event)

    def output(self, stream, text):
        """Print/DEBUGSTREAM text; consecutive writes to one stream merge
        (print() writes its arguments one at a time)."""
        if not self.active or not text:
            return
        last = self.events[-1] if self.events else None
        if last and last[0] == "out" and last[1] == stream:
            last[2] += text
            self.activity += 1
            return
        self.emit(["out", stream, text])

    def finish_output(self):
        for event in self.events:
            if event[0] in ("out", "warn"):
                event[2] = self.scrub(event[2], ctime=True)

    def snapshot(self, obj, tag):
        old = self.snapshots.setdefault(tag, {})
        seen = self.fingerprints.setdefault(tag, {})
        changed = {}
        for name in CHANNEL_ATTRS:
            value = read_attr(obj, name)
            # Formatting is costly: only values that may have changed are
            # formatted (and then compared as text).
            mark = _fingerprint(value)
            if name in seen and seen[name] == mark:
                continue
            seen[name] = mark
            if value is MISSING:
                text = MISSING
            elif name == "producer_fifo":
                text = self.norm_fifo(value)
            elif name == "connected":
                text = self.norm(bool(value))
            else:
                text = self.norm(value)
            if old.get(name, MISSING) != text:
                changed[name] = text
                old[name] = text
        if changed:
            self.emit(["attrs", tag, changed])

    def snapshot_all(self):
        for obj in self.keep:
            tag = self.tags[id(obj)]
            if tag.startswith("ch") and id(obj) not in self.initialising:
                self.snapshot(obj, tag)

    def call(self, obj, role, name, func, args, kwargs):
        tag = self.tag_of(obj, role)
        constructing = role == "ch" and name == "__init__"
        if constructing:
            # Attributes are recorded from the end of the constructor on:
            # before that they are class attributes or leftovers (3.11's
            # shared command_size_limits) that no hook should rely on.
            self.initialising.add(id(obj))
        elif role == "ch" and id(obj) not in self.initialising:
            self.snapshot(obj, tag)
        try:
            return self._call(obj, tag, name, func, args, kwargs)
        finally:
            if constructing:
                self.initialising.discard(id(obj))
                self.snapshot(obj, tag)

    def _call(self, obj, tag, name, func, args, kwargs):
        label = "%s.%s" % (tag, name)
        parts = [self._norm(arg, 0) for arg in args]
        parts += ["%s=%s" % (key, self._norm(kwargs[key], 0)) for key in sorted(kwargs)]
        idle = name in POLL_HOOKS
        event = ["call", self.depth, label, self.scrub("(%s)" % ", ".join(parts))]
        index = len(self.events)
        self.emit(event, idle=idle)
        self.depth += 1
        try:
            result = func(obj, *args, **kwargs)
        except BaseException as exc:
            self.depth -= 1
            text = self.norm(exc)
            if len(self.events) == index + 1:
                event += ["raise", text]
            else:
                self.emit(["raise", self.depth, label, text])
            raise
        self.depth -= 1
        text = self.norm(result, truth=idle)
        if len(self.events) == index + 1:
            event.append(text)
        else:
            self.emit(["return", self.depth, label, text])
        return result


_IMMUTABLE = (str, bytes, int, float, bool, type(None))


def _fingerprint(value):
    """A cheap value that changes whenever the formatted text could."""
    if isinstance(value, _IMMUTABLE):
        return (type(value), value)
    if isinstance(value, (list, collections.deque)):
        items = []
        for item in value:
            if isinstance(item, _IMMUTABLE):
                items.append(item)
            elif isinstance(item, (bytearray, memoryview)):
                items.append((type(item), bytes(item)))
            else:
                items.append((type(item), id(item)))
        return (type(value), tuple(items))
    if isinstance(value, dict):
        return (type(value), tuple(value.items()))
    # anything else is formatted each time
    return object()


RECORDER = Recorder()


class _Capture(io.TextIOBase):
    """A text stream whose writes become events."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        RECORDER.output(self.stream, text)
        return len(text)

    def flush(self):
        pass


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, ResourceWarning) or not RECORDER.active:
        return
    if os.path.basename(filename) == os.path.basename(__file__):
        where = "recorder.py:%d" % lineno
    else:
        where = "elsewhere"
    RECORDER.emit(["warn", category.__name__, str(message), where])


def instrument(cls, role, names):
    """A subclass of cls whose methods ``names`` record their calls."""
    namespace = {"__module__": "hookdiff", "__qualname__": cls.__name__}
    for name in names:
        target = getattr(cls, name, None)
        if not callable(target) or isinstance(target, type):
            continue
        namespace[name] = _wrapper(role, name, target)
    return type(cls.__name__, (cls,), namespace)


def _wrapper(role, name, target):
    def wrapper(self, *args, **kwargs):
        if not RECORDER.active:
            return target(self, *args, **kwargs)
        return RECORDER.call(self, role, name, target, args, kwargs)

    # inspect.signature() follows __wrapped__: smtpd_compat looks at
    # process_message's parameters.
    wrapper.__wrapped__ = target
    wrapper.__name__ = name
    wrapper.__qualname__ = getattr(target, "__qualname__", name)
    wrapper.__doc__ = getattr(target, "__doc__", None)
    return wrapper


# ---------------------------------------------------------------------------
# Behaviours of channel subclasses
# ---------------------------------------------------------------------------


def _received_text(channel):
    return repr(
        [bytes(x) if isinstance(x, bytearray) else x for x in channel.received_lines]
    )


class Verbs:
    """Custom commands, as legacy subclasses add them."""

    def smtp_XYZZY(self, arg):
        self.push("250 xyzzy %s" % arg if arg else "250 Nothing happens")

    def smtp_STATE(self, arg):
        self.smtp_state = int(arg)
        self.push("250 state %s" % arg)

    _TERMINATORS = {
        "LF": b"\n",
        "CRLF": b"\r\n",
        "NONE": None,
        "DOT": b"\r\n.\r\n",
        "STR": "\r\n",
        "XX": b"XX",
    }

    def smtp_TERM(self, arg):
        if arg in self._TERMINATORS:
            self.set_terminator(self._TERMINATORS[arg])
        else:
            self.set_terminator(int(arg))
        self.push("250 terminator %s" % arg)

    def smtp_NUMBYTES(self, arg):
        self.num_bytes = int(arg)
        self.push("250 num_bytes %s" % arg)

    def smtp_PUSHMANY(self, arg):
        self.push("250-one")
        self.push("250-two")
        self.push("250 three")

    def smtp_PRODUCE(self, arg):
        self.push_with_producer(
            asynchat.simple_producer(b"250-produced\r\n250 by a producer\r\n", 8)
        )

    def smtp_DISCARD(self, arg):
        self.discard_buffers()
        self.push("250 discarded")

    def smtp_RAWPUSH(self, arg):
        asynchat.async_chat.push(self, b"250 raw push\r\n")

    def smtp_GREET(self, arg):
        self.seen_greeting = arg
        self.extended_smtp = True
        self.push("250 greeted %s" % arg)

    def smtp_MYDATA(self, arg):
        self.smtp_state = self.DATA
        self.set_terminator(b"\r\n.\r\n")
        self.push("354 go on")

    def smtp_RESETME(self, arg):
        self._set_rset_state()
        self.push("250 reset done")

    def smtp_PEEK(self, arg):
        self.push("250 pending %r" % bytes(self.ac_in_buffer))

    def smtp_DROPIN(self, arg):
        self.ac_in_buffer = b""
        self.push("250 input dropped")

    def smtp_INJECT(self, arg):
        self.ac_in_buffer = b"XYZZY injected\r\n" + self.ac_in_buffer
        self.push("250 injected")

    def smtp_LIMIT(self, arg):
        self.command_size_limits["NOOP"] = int(arg)
        self.push("250 limit set")

    def smtp_BOOM(self, arg):
        raise ValueError("boom: %s" % arg)

    def smtp_PUSHBOOM(self, arg):
        self.push("250 about to fail")
        raise RuntimeError("pushboom")

    def smtp_EXIT(self, arg):
        self.push("250 leaving the loop")
        raise asyncore.ExitNow("exit requested")

    def smtp_BYE(self, arg):
        self.push("221 closing now")
        self.close()

    def smtp_BYEDONE(self, arg):
        self.push("221 closing when done")
        self.close_when_done()

    def smtp_QUIETDONE(self, arg):
        self.close_when_done()

    def smtp_CLOSEALL(self, arg):
        self.push("221 closing everything")
        asyncore.close_all(self._map)

    def smtp_SILENTCLOSE(self, arg):
        self.close()

    def smtp_BYETWICE(self, arg):
        self.push("221 twice")
        self.close()
        self.close()

    def smtp_HCLOSE(self, arg):
        self.push("221 handle_close")
        self.handle_close()

    def smtp_ALIAS(self, arg):
        values = []
        for name in [
            "state",
            "greeting",
            "mailfrom",
            "rcpttos",
            "line",
            "data",
            "fqdn",
            "peer",
            "addr",
        ]:
            value = getattr(self, "_SMTPChannel__" + name)
            values.append("%s=%r" % (name, value))
        values.append("server=%s" % (self._SMTPChannel__server is self.smtp_server))
        values.append("conn=%s" % (self._SMTPChannel__conn is self.conn))
        self.push("250 " + "; ".join(values))

    def smtp_ALIASSET(self, arg):
        self._SMTPChannel__greeting = arg
        self._SMTPChannel__data = "set by a verb"
        self._SMTPChannel__fqdn = "alias.example"
        self.push("250 set")

    def smtp_ALIASSTATE(self, arg):
        self._SMTPChannel__state = int(arg)
        self.push("250 state set through the alias")


class NoopRaise:
    def smtp_NOOP(self, arg):
        raise KeyError("noop")


class MailRaiseAfter:
    def smtp_MAIL(self, arg):
        super().smtp_MAIL(arg)
        raise RuntimeError("after MAIL")


class FoundTerminatorRaiseBefore:
    def found_terminator(self):
        text = _received_text(self)
        if "FTBOOM" in text:
            raise ValueError("found_terminator failed")
        if "FTEXIT" in text:
            raise asyncore.ExitNow("found_terminator exit")
        super().found_terminator()


def found_terminator_raise_after(count):
    class FoundTerminatorRaiseAfter:
        _ft_calls = 0

        def found_terminator(self):
            super().found_terminator()
            self._ft_calls += 1
            if self._ft_calls == count:
                raise RuntimeError("after %d" % count)

    return FoundTerminatorRaiseAfter


class CollectRaise:
    def collect_incoming_data(self, data):
        if b"CIDBOOM" in bytes(data):
            raise ValueError("bad data")
        super().collect_incoming_data(data)


class CollectUpper:
    def collect_incoming_data(self, data):
        super().collect_incoming_data(data.upper())


class CollectCount:
    collected = 0

    def collect_incoming_data(self, data):
        self.collected += len(data)
        super().collect_incoming_data(data)


class CollectAlias:
    def collect_incoming_data(self, data):
        if self.smtp_state == self.DATA:
            self.alias_value = self._SMTPChannel__line
        super().collect_incoming_data(data)


class FoundTerminatorAlias:
    def found_terminator(self):
        self.alias_values = (self._SMTPChannel__server, self._SMTPChannel__conn)
        super().found_terminator()


class FoundTerminatorInspect:
    def found_terminator(self):
        self.last_lines = _received_text(self)
        super().found_terminator()


class HandleErrorSwallow:
    def handle_error(self):
        self.log_info("handled: %r" % (sys.exc_info()[1],), "warning")


class HandleErrorRaise:
    def handle_error(self):
        raise RuntimeError("handle_error failed")


class ClosePushBye:
    def handle_close(self):
        if self.connected:
            self.push("221 farewell")
        super().handle_close()


class HandleCloseIgnore:
    def handle_close(self):
        pass


class SendRecord:
    def send(self, data):
        self.__dict__.setdefault("sent_log", []).append(bytes(data))
        return super().send(data)


class SendSwallow:
    def send(self, data):
        return len(data)


def send_partial(limit):
    class SendPartial:
        def send(self, data):
            return super().send(data[:limit])

    return SendPartial


class SendZeroFirst:
    def send(self, data):
        seen = self.__dict__.setdefault("seen_sends", set())
        if bytes(data) not in seen:
            seen.add(bytes(data))
            return 0
        return super().send(data)


class SendUpper:
    def send(self, data):
        return super().send(bytes(data).upper())


class PushRewrite:
    def push(self, msg):
        if msg == "250 OK":
            msg = "250 Fine"
        super().push(msg)


class PushLog:
    def push(self, msg):
        self.__dict__.setdefault("pushed", []).append(msg)
        super().push(msg)


class PushSplit:
    def push(self, msg):
        if msg.startswith("250 "):
            super().push("250-note")
        super().push(msg)


class InitiateWrap:
    def initiate_send(self):
        super().initiate_send()


class WriteWrap:
    def handle_write(self):
        super().handle_write()


class ReadWrap:
    def handle_read(self):
        super().handle_read()


class PollWrap:
    def readable(self):
        return super().readable()

    def writable(self):
        return super().writable()


class StripWrap:
    def _strip_command_keyword(self, keyword, arg):
        return super()._strip_command_keyword(keyword, arg)


class DataReimplemented:
    def smtp_DATA(self, arg):
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        if not self.rcpttos:
            self.push("503 Error: need RCPT command")
            return
        self.smtp_state = self.DATA
        self.set_terminator(b"\r\n.\r\n")
        self.push("354 Send it")


class DataAfterSuper:
    def smtp_DATA(self, arg):
        super().smtp_DATA(arg)
        if self.smtp_state == self.DATA:
            self.set_terminator(b"\r\nEND\r\n")


class HeloReimplemented:
    def smtp_HELO(self, arg):
        if not arg:
            self.push("501 Syntax: HELO hostname")
            return
        self.seen_greeting = arg
        self.push("250 Hello %s" % arg)


class EhloReimplemented:
    def smtp_EHLO(self, arg):
        self.seen_greeting = arg
        self.extended_smtp = True
        self.push("250-%s" % self.fqdn)
        self.push("250-SIZE %s" % self.data_size_limit)
        self.command_size_limits["MAIL"] += 26
        self.push("250-XEXTRA")
        self.push("250 HELP")


class QuitReimplemented:
    def smtp_QUIT(self, arg):
        self.push("221 See you")
        self.close_when_done()


class NoopCounter:
    noops = 0

    def smtp_NOOP(self, arg):
        self.noops += 1
        self.push("250 OK %d" % self.noops)


class MailPolicy:
    def smtp_MAIL(self, arg):
        if arg and "reject" in arg:
            self.push("550 Policy rejection")
            return
        super().smtp_MAIL(arg)


class RcptLimit:
    def smtp_RCPT(self, arg):
        if len(self.rcpttos) >= 2:
            self.push("452 Too many recipients")
            return
        super().smtp_RCPT(arg)


class GetaddrLower:
    def _getaddr(self, arg):
        address, rest = super()._getaddr(arg)
        return (address.lower() if address else address), rest


class GetparamsAllow:
    def _getparams(self, params):
        result = super()._getparams(params)
        if result is not None:
            result.pop("XFOO", None)
        return result


class StateExtended:
    resets = 0
    rsets = 0

    def _set_post_data_state(self):
        super()._set_post_data_state()
        self.resets += 1

    def _set_rset_state(self):
        super()._set_rset_state()
        self.rsets += 1


def helper_named(name):
    def helper(self, *args, **kwargs):
        return None

    return type("Helper", (), {name: helper})


CHANNEL_MODS = {
    "verbs": Verbs,
    "noop-raise": NoopRaise,
    "mail-raise-after": MailRaiseAfter,
    "ft-raise-before": FoundTerminatorRaiseBefore,
    "cid-raise": CollectRaise,
    "cid-upper": CollectUpper,
    "cid-count": CollectCount,
    "cid-alias": CollectAlias,
    "ft-alias": FoundTerminatorAlias,
    "ft-inspect": FoundTerminatorInspect,
    "handle-error-swallow": HandleErrorSwallow,
    "handle-error-raise": HandleErrorRaise,
    "close-push-bye": ClosePushBye,
    "handle-close-ignore": HandleCloseIgnore,
    "send-record": SendRecord,
    "send-swallow": SendSwallow,
    "send-zero-first": SendZeroFirst,
    "send-upper": SendUpper,
    "push-rewrite": PushRewrite,
    "push-log": PushLog,
    "push-split": PushSplit,
    "initiate-wrap": InitiateWrap,
    "write-wrap": WriteWrap,
    "read-wrap": ReadWrap,
    "poll-wrap": PollWrap,
    "strip-wrap": StripWrap,
    "data-reimplemented": DataReimplemented,
    "data-after-super": DataAfterSuper,
    "helo-reimplemented": HeloReimplemented,
    "ehlo-reimplemented": EhloReimplemented,
    "quit-reimplemented": QuitReimplemented,
    "noop-counter": NoopCounter,
    "mail-policy": MailPolicy,
    "rcpt-limit": RcptLimit,
    "getaddr-lower": GetaddrLower,
    "getparams-allow": GetparamsAllow,
    "state-extended": StateExtended,
}


def channel_mod(name):
    kind, _, param = name.partition(":")
    if kind == "ft-raise-after":
        return found_terminator_raise_after(int(param))
    if kind == "send-partial":
        return send_partial(int(param))
    if kind == "helper":
        return helper_named(param)
    return CHANNEL_MODS[name]


# ---------------------------------------------------------------------------
# Behaviours of server subclasses
# ---------------------------------------------------------------------------


class PmOk:
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        return None


class PmStatus:
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        return "250 Message accepted for delivery"


class PmReject:
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        return "550 Requested action not taken: mailbox unavailable"


class PmRaise:
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        raise ValueError("cannot store message")


class PmBytes:
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        return b"250 bytes status"


class PmInt:
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        return 250


class PmExitNow:
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        raise asyncore.ExitNow("from process_message")


class PmCloseAll:
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        asyncore.close_all(self._map)
        return "250 closed"


class PmOldSignature:
    def process_message(self, peer, mailfrom, rcpttos, data):
        return None


class PmNamedOptions:
    def process_message(
        self, peer, mailfrom, rcpttos, data, mail_options=None, rcpt_options=None
    ):
        return None


class PrintOverride:
    def _print_message_content(self, peer, data):
        print("custom print of %d bytes" % len(data))
        super()._print_message_content(peer, data)


class DeliverOk:
    def _deliver(self, mailfrom, rcpttos, data):
        return {}


class DeliverRefuseOne:
    def _deliver(self, mailfrom, rcpttos, data):
        return {rcpttos[0]: (550, b"No such user")}


class DeliverRefuseAll:
    def _deliver(self, mailfrom, rcpttos, data):
        return {rcpt: (550, b"No such user") for rcpt in rcpttos}


class DeliverRaise:
    def _deliver(self, mailfrom, rcpttos, data):
        raise OSError("upstream unreachable")


class AcceptedRaise:
    def handle_accepted(self, conn, addr):
        raise RuntimeError("refusing connection")


class AcceptedRaiseOnce:
    _refused = False

    def handle_accepted(self, conn, addr):
        if not self._refused:
            self._refused = True
            raise RuntimeError("refusing the first connection")
        super().handle_accepted(conn, addr)


class AcceptedCustom:
    def handle_accepted(self, conn, addr):
        self.channel_class(self, conn, addr, 1000, self._map, False, True)


class AcceptedDrop:
    def handle_accepted(self, conn, addr):
        conn.close()


class AcceptedWrap:
    def handle_accepted(self, conn, addr):
        super().handle_accepted(conn, addr)


class AcceptWrap:
    def handle_accept(self):
        super().handle_accept()


class ServerHandleErrorLog:
    def handle_error(self):
        self.log_info("server error handled: %r" % (sys.exc_info()[1],), "warning")


SERVER_MODS = {
    "pm-ok": PmOk,
    "pm-status": PmStatus,
    "pm-reject": PmReject,
    "pm-raise": PmRaise,
    "pm-bytes": PmBytes,
    "pm-int": PmInt,
    "pm-exitnow": PmExitNow,
    "pm-closeall": PmCloseAll,
    "pm-old-signature": PmOldSignature,
    "pm-named-options": PmNamedOptions,
    "print-override": PrintOverride,
    "deliver-ok": DeliverOk,
    "deliver-refuse-one": DeliverRefuseOne,
    "deliver-refuse-all": DeliverRefuseAll,
    "deliver-raise": DeliverRaise,
    "accepted-raise": AcceptedRaise,
    "accepted-raise-once": AcceptedRaiseOnce,
    "accepted-custom": AcceptedCustom,
    "accepted-drop": AcceptedDrop,
    "accepted-wrap": AcceptedWrap,
    "accept-wrap": AcceptWrap,
    "srv-handle-error-log": ServerHandleErrorLog,
    "instance-channel-class": None,  # handled in build_classes()
}

# ---------------------------------------------------------------------------
# A stand-in for GNU Mailman 2 (both the 2.0 API Python 3.10 used and the
# 2.1 switchboard smtpd_compat uses)
# ---------------------------------------------------------------------------

FAKE_MAILMAN = {
    "__init__.py": """
        LISTS = {"announce", "dev"}

        def RECORD(*event):
            pass
    """,
    "Utils.py": """
        import Mailman

        def list_exists(listname):
            Mailman.RECORD("list_exists", listname)
            return listname in Mailman.LISTS
    """,
    "MailList.py": """
        import Mailman

        class MailList:
            def __init__(self, listname, lock=1):
                Mailman.RECORD("MailList", listname, lock)
                self.listname = listname
    """,
    "Message.py": """
        import email
        import email.message
        import Mailman

        class Message(email.message.Message):
            def __init__(self, fp=None):
                email.message.Message.__init__(self)
                if fp is not None:
                    parsed = email.message_from_file(fp)
                    for key, value in parsed.items():
                        self[key] = value
                    self.set_payload(parsed.get_payload())

            def Enqueue(self, mlist, **flags):
                Mailman.RECORD("Enqueue", mlist.listname, sorted(flags.items()),
                               self.get("Subject"))
    """,
    "mm_cfg.py": """
        INQUEUE_DIR = "/fake/qfiles/in"
        CMDQUEUE_DIR = "/fake/qfiles/commands"
        BOUNCEQUEUE_DIR = "/fake/qfiles/bounces"
    """,
    "Queue/__init__.py": "",
    "Queue/sbcache.py": """
        import Mailman

        class Switchboard:
            def __init__(self, whichq):
                self.whichq = whichq

            def enqueue(self, msg, **metadata):
                Mailman.RECORD("enqueue", self.whichq, sorted(metadata.items()),
                               msg.get("Subject"))

        def get_switchboard(whichq):
            return Switchboard(whichq)
    """,
}


def install_fake_mailman(directory):
    for relative, source in FAKE_MAILMAN.items():
        path = os.path.join(directory, "Mailman", relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(textwrap.dedent(source))
    sys.path.insert(0, directory)
    import Mailman

    def record(*event):
        if RECORDER.active:
            RECORDER.emit(["mailman"] + [RECORDER.norm(item) for item in event])

    Mailman.RECORD = record


# ---------------------------------------------------------------------------
# Building a session's classes
# ---------------------------------------------------------------------------


def build_classes(session):
    spec = session["server"]
    module = smtpd310 if spec["base"] == "MailmanProxy" else smtpd
    if module is None:
        raise RuntimeError("no MailmanProxy reference (--mailman-reference)")
    channel_bases = tuple(channel_mod(name) for name in session["channel_mods"])
    channel_base = type(
        "Channel", channel_bases + (module.SMTPChannel,), {"__module__": "hookdiff"}
    )
    names = list(CHANNEL_HOOKS)
    if session.get("instrument") == "light":
        names = [name for name in names if name not in scenarios.UNWRAPPED_IN_LIGHT]
    names += [name for name in dir(channel_base) if name.startswith("smtp_")]
    for mod in session["channel_mods"]:
        if mod.startswith("helper:"):
            names.append(mod.split(":", 1)[1])
    channel_class = instrument(channel_base, "ch", names)

    server_mods = [name for name in session["server_mods"] if SERVER_MODS[name]]
    server_bases = tuple(SERVER_MODS[name] for name in server_mods)
    namespace = {"__module__": "hookdiff", "channel_class": channel_class}
    if "instance-channel-class" in session["server_mods"]:
        namespace["channel_class"] = module.SMTPChannel
    server_base = type(
        "Server", server_bases + (getattr(module, spec["base"]),), namespace
    )
    server_class = instrument(server_base, "srv", SERVER_HOOKS)
    return module, server_class, channel_class


# ---------------------------------------------------------------------------
# Driving a session
# ---------------------------------------------------------------------------

WAIT = 2.0  # seconds to wait for bytes to reach the other side (never reached)
MAX_PASSES = 40  # loop passes per step before giving up on quiescence
MAX_EVENTS = 20000


class Client:
    def __init__(self, index, port):
        self.index = index
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self.sock.getsockname()[1]
        self.open = True  # we have not closed it
        self.state = "open"  # what we have seen of the server's side

    def receive(self):
        data = b""
        while self.open and self.state == "open":
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                break
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                self.state = "reset"
                break
            if not chunk:
                self.state = "eof"
                break
            data += chunk
        return data


class Session:
    def __init__(self, session):
        self.session = session
        self.map = {}
        self.clients = []
        self.server = None
        self.nodelay = set()

    def channel_sockets(self, client):
        socks = []
        for dispatcher in list(self.map.values()):
            if dispatcher is self.server:
                continue
            addr = read_attr(dispatcher, "addr")
            if isinstance(addr, tuple) and len(addr) > 1 and addr[1] == client.port:
                sock = read_attr(dispatcher, "socket")
                if isinstance(sock, socket.socket) and sock.fileno() >= 0:
                    socks.append(sock)
        return socks

    def wait_readable(self, socks):
        if socks:
            select.select(socks, [], [], WAIT)

    def no_delay(self):
        """TCP_NODELAY on the server's side of each connection.

        Otherwise Nagle's algorithm holds back a second reply segment until
        the client acknowledges the first, so the client could not read
        everything that was sent as soon as the loop is idle.  Setting it
        is invisible to the hooks (smtpd_compat sets it itself).
        """
        for dispatcher in list(self.map.values()):
            if dispatcher is self.server or id(dispatcher) in self.nodelay:
                continue
            sock = read_attr(dispatcher, "socket")
            if isinstance(sock, socket.socket) and sock.fileno() >= 0:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
                self.nodelay.add(id(dispatcher))

    def pump(self):
        for _ in range(MAX_PASSES):
            before = RECORDER.activity
            try:
                asyncore.loop(timeout=0, count=1, map=self.map)
            except asyncore.ExitNow as exc:
                RECORDER.emit(["loop", "ExitNow(%r)" % str(exc)])
            except Exception as exc:  # noqa: BLE001 - part of the trace
                RECORDER.emit(["loop", RECORDER.norm(exc)])
            self.no_delay()
            if RECORDER.activity == before:
                return
            if len(RECORDER.events) > MAX_EVENTS:
                break
        RECORDER.emit(["loop", "not idle after %d passes" % MAX_PASSES])

    def settle(self, number, client):
        self.pump()
        RECORDER.snapshot_all()
        if client is not None and client.open:
            data = client.receive()
            RECORDER.emit(["client", number, RECORDER.norm(data), client.state])

    def connect(self, number, index):
        try:
            client = Client(index, self.port)
        except OSError as exc:
            # (the server may have closed its listening socket)
            RECORDER.emit(
                ["client", number, "connect failed: %s" % type(exc).__name__, "refused"]
            )
            self.clients.append(None)
            return
        RECORDER.add_port(client.port, "<cport%d>" % index)
        self.clients.append(client)
        if self.server in self.map.values():
            self.wait_readable([self.server.socket])
        self.settle(number, client)

    def run(self):
        session = self.session
        spec = session["server"]
        module, server_class, channel_class = build_classes(session)
        self.module = module
        for mod in (smtpd, smtpd310):
            if mod is not None:
                mod.DEBUGSTREAM = (
                    _Capture("debug") if session["debug"] else mod.Devnull()
                )
        limit = spec["data_size_limit"]
        if limit == "default":
            limit = module.DATA_SIZE_DEFAULT
        RECORDER.special[id(self.map)] = "<map>"
        RECORDER.active = True
        self.server = server_class(
            ("127.0.0.1", 0),
            ("127.0.0.1", 9),
            limit,
            map=self.map,
            enable_SMTPUTF8=spec["enable_SMTPUTF8"],
            decode_data=spec["decode_data"],
        )
        if "instance-channel-class" in session["server_mods"]:
            # the class attribute is the plain SMTPChannel: only the
            # instance's setting gives the session's channel class
            self.server.channel_class = channel_class
        self.port = self.server.socket.getsockname()[1]
        RECORDER.add_port(self.port, "<sport>")
        steps = [(0, "connect")] + [tuple(step) for step in session["steps"]]
        for number, (index, action) in enumerate(steps):
            if len(RECORDER.events) > MAX_EVENTS:
                RECORDER.emit(["truncated"])
                break
            if action == "connect":
                RECORDER.emit(["step", number, index, "connect"])
                self.connect(number, index)
                continue
            client = self.clients[index]
            if client is None or not client.open or client.state != "open":
                RECORDER.emit(["step", number, index, "skipped: connection closed"])
                continue
            if action == "shutdown":
                RECORDER.emit(["step", number, index, "shutdown"])
                client.sock.shutdown(socket.SHUT_WR)
            elif action == "close":
                RECORDER.emit(["step", number, index, "close"])
                socks = self.channel_sockets(client)
                client.sock.close()
                client.open = False
                self.wait_readable(socks)
                self.settle(number, None)
                continue
            else:
                RECORDER.emit(["step", number, index, repr(action)])
                try:
                    client.sock.sendall(action)
                except OSError as exc:
                    RECORDER.emit(
                        [
                            "client",
                            number,
                            "send failed: %s" % type(exc).__name__,
                            client.state,
                        ]
                    )
                    continue
            self.wait_readable(self.channel_sockets(client))
            self.settle(number, client)
        # the clients hang up
        for client in self.clients:
            if client is not None and client.open:
                RECORDER.emit(["step", "end", client.index, "close"])
                socks = self.channel_sockets(client)
                client.sock.close()
                client.open = False
                self.wait_readable(socks)
                self.settle("end", None)
        remaining = sorted(
            RECORDER.tags.get(id(d), "<%s>" % type(d).__name__)
            for d in self.map.values()
        )
        RECORDER.emit(["end", remaining])

    def cleanup(self):
        RECORDER.active = False
        for dispatcher in list(self.map.values()):
            try:
                dispatcher.close()
            except Exception:  # noqa: BLE001,S110 - best effort
                pass
        self.map.clear()
        for client in self.clients:
            if client is not None:
                client.sock.close()


def _class_tables():
    """The class-level command_size_limits tables a session may change."""
    tables = []
    for module in (smtpd, smtpd310):
        if module is not None:
            tables.append(module.SMTPChannel.command_size_limits)
    return tables


def run_session(session):
    global RECORDER
    RECORDER = Recorder()
    driver = Session(session)
    # Each session starts from the state a fresh process has: a subclass
    # may write to the class-level command_size_limits table.
    saved_tables = [(table, dict(table)) for table in _class_tables()]
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Capture("stdout"), _Capture("stderr")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            try:
                driver.run()
            except Exception as exc:  # noqa: BLE001 - part of the trace
                RECORDER.active = True
                RECORDER.emit(["driver-error", RECORDER.norm(exc)])
            finally:
                driver.cleanup()
    finally:
        sys.stdout, sys.stderr = saved
        for table, contents in saved_tables:
            table.clear()
            table.update(contents)
    RECORDER.finish_output()
    return RECORDER.events


# ---------------------------------------------------------------------------
# Choosing the implementation
# ---------------------------------------------------------------------------


def load_implementation(impl, mailman_reference):
    global smtpd, asynchat, asyncore, smtpd310
    if impl == "stdlib":
        if sys.version_info[:2] != (3, 11):
            raise SystemExit(
                "the reference must run under Python 3.11, not %s"
                % sys.version.split()[0]
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import asynchat as chat
            import asyncore as core
            import smtpd as server_module
        stdlib = os.path.dirname(os.__file__)
        for module in (chat, core, server_module):
            if os.path.dirname(os.path.abspath(module.__file__)) != stdlib:
                raise SystemExit(
                    "%s does not come from the standard library (%s)"
                    % (module.__name__, module.__file__)
                )
        if "smtpd_compat" in sys.modules:
            raise SystemExit("smtpd_compat was imported by the reference run")
        smtpd, asynchat, asyncore = server_module, chat, core
        if mailman_reference:
            spec = importlib.util.spec_from_file_location("smtpd310", mailman_reference)
            module = importlib.util.module_from_spec(spec)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                spec.loader.exec_module(module)
            if not hasattr(module, "MailmanProxy"):
                raise SystemExit("%s has no MailmanProxy" % mailman_reference)
            smtpd310 = module
    else:
        import smtpd_compat
        import smtpd_compat.asynchat as chat

        smtpd, asynchat, asyncore = smtpd_compat, chat, smtpd_compat.asyncore
        smtpd310 = smtpd_compat


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=["stdlib", "compat"], required=True)
    parser.add_argument("--mailman-reference", help="Python 3.10's smtpd.py")
    parser.add_argument("--only", nargs="*", help="session ids to run")
    parser.add_argument("--out", help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    load_implementation(args.impl, args.mailman_reference)
    socket.getfqdn = lambda name="": FQDN
    tmp = tempfile.mkdtemp(prefix="hookdiff-mailman-")
    install_fake_mailman(tmp)
    sessions = scenarios.generate()
    if args.only:
        wanted = set(args.only)
        sessions = [s for s in sessions if s["id"] in wanted]
    started = time.monotonic()
    result = {
        "impl": args.impl,
        "python": sys.version.split()[0],
        "module": getattr(smtpd, "__file__", "?"),
        "sessions": {},
    }
    for session in sessions:
        result["sessions"][session["id"]] = run_session(session)
    result["seconds"] = round(time.monotonic() - started, 2)
    text = json.dumps(result, indent=None, separators=(",", ":"))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text + "\n")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
