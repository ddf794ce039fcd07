"""Readiness for Python 3.14 and later, simulated on the running interpreter.

* PEP 649 (3.14): annotations are evaluated when first asked for, and
  ``inspect.signature()`` asks for them, so a handler annotated with a name
  imported only under ``TYPE_CHECKING`` makes it raise NameError.  Which of
  mail_options/rcpt_options a process_message() takes must be found out
  without that, and delivery must never fail over it.
* test_smtplib imports smtpd and asyncore differently in each release, and
  CPython has spelled them ``test.support._smtpd`` / ``_asyncore`` before;
  the conformance script must rewrite every known form.

(The email parser's changes are simulated in test_protocol.py.)
"""

import functools
import gc
import importlib
import inspect
import sys
import types
import weakref
from pathlib import Path

import pytest
from conftest import Delivery, RecordingServer, data_reply_ok

import smtpd_compat

OK = b"250 OK\r\n"
LOCAL_ERROR = b"451 Requested action aborted: local error in processing\r\n"
OPTIONS = {"mail_options": ["BODY=8BITMIME"], "rcpt_options": []}


def transaction(client):
    """One message with a MAIL parameter; the reply to its end of data."""
    assert client.cmd("EHLO client").startswith(b"250")
    assert client.cmd("MAIL FROM:<a@b> BODY=8BITMIME") == OK
    assert client.cmd("RCPT TO:<c@d>") == OK
    assert client.cmd("DATA").startswith(b"354 ")
    return data_reply_ok(client, b"Hello")


# A handler module as it is written for type checkers: the annotation's name
# exists only while type checking.  With ``from __future__ import
# annotations`` it can be defined on every Python version; what 3.14 does
# without it (evaluate on demand) is simulated by evaluating_signature().
HANDLERS_SOURCE = """
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nowhere import Options, Peer


def plain(peer: Peer, mailfrom: str, rcpttos: list, data: bytes) -> None:
    pass


def takes_mail_options(peer, mailfrom, rcpttos, data, mail_options: Options):
    pass


def takes_kwargs(peer, mailfrom, rcpttos, data, **kwargs: Options):
    pass


def keyword_only(peer, mailfrom, rcpttos, data, *, rcpt_options: Options = None):
    pass


def positional_only(peer, mailfrom, rcpttos, data, mail_options: Options, /):
    pass


class Handler:
    def __call__(self, peer: Peer, mailfrom, rcpttos, data, rcpt_options: Options):
        pass
"""


@pytest.fixture
def handlers():
    module = types.ModuleType("smtpd_compat_test_handlers")
    exec(compile(HANDLERS_SOURCE, "<handlers>", "exec"), module.__dict__)  # noqa: S102
    return module


@pytest.fixture(autouse=True)
def fresh_cache():
    smtpd_compat._accepted_options.cache_clear()
    yield
    smtpd_compat._accepted_options.cache_clear()


def _annotated_function(obj):
    """The function whose annotations inspect.signature(obj) would read."""
    obj = inspect.unwrap(obj)
    if inspect.isfunction(obj):
        return obj
    call = inspect.getattr_static(type(obj), "__call__", None)
    return call if inspect.isfunction(call) else None


def evaluating_signature(real_signature):
    """inspect.signature() as 3.14 runs it by default: annotations evaluated.

    String annotations are evaluated in the function's globals, so a name
    that exists only under TYPE_CHECKING raises NameError, as it does on
    3.14 for a module without ``from __future__ import annotations``.
    """

    def signature(obj, **kwargs):
        function = _annotated_function(obj)
        if function is not None:
            for annotation in function.__annotations__.values():
                if isinstance(annotation, str):
                    eval(annotation, function.__globals__)
        return real_signature(obj, **kwargs)

    return signature


@pytest.fixture
def pep649(monkeypatch):
    """Make inspect.signature() evaluate annotations, as 3.14's does."""
    monkeypatch.setattr(inspect, "signature", evaluating_signature(inspect.signature))


def test_simulation_raises_like_314(handlers, pep649):
    # the premise: asking inspect for these signatures fails ...
    for handler in (handlers.plain, handlers.takes_mail_options, handlers.Handler()):
        with pytest.raises(NameError):
            inspect.signature(handler)


@pytest.mark.parametrize(
    "name,accepted",
    [
        ("plain", frozenset()),
        ("takes_mail_options", frozenset({"mail_options"})),
        ("takes_kwargs", None),
        ("keyword_only", frozenset({"rcpt_options"})),
        ("positional_only", frozenset()),
    ],
)
def test_functions_read_without_annotations(handlers, pep649, name, accepted):
    # ... but the options a handler takes are still known exactly.
    assert smtpd_compat._accepted_options(getattr(handlers, name)) == accepted


def test_callable_object_read_without_annotations(handlers, pep649):
    assert smtpd_compat._accepted_options(handlers.Handler()) == frozenset(
        {"rcpt_options"}
    )


def test_decorated_function_read_without_annotations(handlers, pep649):
    @functools.wraps(handlers.takes_mail_options)
    def wrapper(*args, **kwargs):
        return handlers.takes_mail_options(*args, **kwargs)

    # what the wrapper forwards to decides, as with inspect.signature()
    assert smtpd_compat._accepted_options(wrapper) == frozenset({"mail_options"})


def test_partial_handler_is_read_from_its_signature():
    """functools.partial has no code of its own: only signature() reads it."""

    def handler(tag, peer, mailfrom, rcpttos, data, rcpt_options=()):
        pass

    bound = functools.partial(handler, "tag")
    assert smtpd_compat._code_behind(bound) is None
    assert smtpd_compat._accepted_options(bound) == frozenset({"rcpt_options"})


def test_function_with_a_declared_signature_is_read_from_it():
    """A function whose __signature__ was set (as decorators that change the
    call do) is read from that signature, not from its code."""

    def handler(*args, **kwargs):
        pass

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    handler.__signature__ = inspect.Signature(
        [
            inspect.Parameter(name, positional)
            for name in ("peer", "mailfrom", "rcpttos", "data", "mail_options")
        ]
    )
    assert smtpd_compat._accepted_options(handler) == frozenset({"mail_options"})


def test_star_args_named_like_an_option_take_no_keyword():
    def handler(peer, mailfrom, rcpttos, data, *mail_options):
        pass

    @functools.wraps(handler)
    def decorated(*args, **kwargs):
        return handler(*args, **kwargs)

    # read from the code object, and through inspect.signature()
    assert smtpd_compat._accepted_options(handler) == frozenset()
    assert smtpd_compat._accepted_options(decorated) == frozenset()


def test_positional_only_parameters_before_an_option():
    def handler(peer, mailfrom, rcpttos, data, /, mail_options=None):
        pass

    @functools.wraps(handler)
    def decorated(*args, **kwargs):
        return handler(*args, **kwargs)

    # read from the code object, and through inspect.signature()
    assert smtpd_compat._accepted_options(handler) == frozenset({"mail_options"})
    assert smtpd_compat._accepted_options(decorated) == frozenset({"mail_options"})


class UnhashableHandler:
    """A callable object that defines __eq__ and so has no hash."""

    def __eq__(self, other):
        return self is other

    def __call__(self, peer, mailfrom, rcpttos, data, rcpt_options=()):
        pass


def test_unhashable_handler_is_read_too():
    assert smtpd_compat._options_for(UnhashableHandler(), dict(OPTIONS)) == {
        "rcpt_options": []
    }


def test_the_options_cache_keeps_no_server_alive():
    """Handlers are cached by their function, not by the bound method,
    which would hold on to the server."""

    class Server:
        def process_message(self, peer, mailfrom, rcpttos, data, mail_options=()):
            pass

    server = Server()
    options = smtpd_compat._options_for(server.process_message, dict(OPTIONS))
    assert options == {"mail_options": ["BODY=8BITMIME"]}
    alive = weakref.ref(server)
    del server
    gc.collect()
    assert alive() is None


def test_local_variables_are_no_parameters():
    def handler(peer, mailfrom, rcpttos, data):
        mail_options = rcpt_options = None
        return mail_options, rcpt_options

    assert smtpd_compat._accepted_options(handler) == frozenset()


def make_server_class(function):
    """An SMTPServer whose process_message runs ``function`` and records."""

    class Server(RecordingServer):
        pass

    def process_message(self, *args, **kwargs):
        self.deliveries.append(Delivery(*args[:4], kwargs))
        return function(*args, **kwargs)

    # the signature smtpd_compat sees is the handler's own
    functools.update_wrapper(process_message, function)
    process_message.__wrapped__ = function
    Server.process_message = process_message
    return Server


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("plain", {}),
        ("takes_mail_options", {"mail_options": ["BODY=8BITMIME"]}),
        ("takes_kwargs", {"mail_options": ["BODY=8BITMIME"], "rcpt_options": []}),
        ("keyword_only", {"rcpt_options": []}),
    ],
)
def test_delivery_with_type_checking_annotations(
    handlers, pep649, serve, connect, name, kwargs
):
    server = serve(make_server_class(getattr(handlers, name)))
    client = connect(server)
    assert transaction(client) == OK
    assert [d.kwargs for d in server.deliveries] == [kwargs]
    assert [d.data for d in server.deliveries] == [b"Hello"]


def test_plain_process_message_method(handlers, pep649, serve, connect):
    class Server(smtpd_compat.SMTPServer):
        got = None

        def process_message(self, peer, mailfrom, rcpttos, data):
            type(self).got = (mailfrom, rcpttos, data)

    # a name this module does not have, as under TYPE_CHECKING
    Server.process_message.__annotations__["peer"] = "Peer"
    server = serve(Server)
    client = connect(server)
    assert transaction(client) == OK
    assert Server.got == ("a@b", ["c@d"], b"Hello")


# --- handlers whose signature cannot be read -----------------------------------


class BrokenSignature:
    """A callable whose ``__signature__`` raises, as a lazy annotation can."""

    def __init__(self):
        self.calls = []

    @property
    def __signature__(self):
        raise NameError("name 'Options' is not defined")

    def __call__(self, peer, mailfrom, rcpttos, data):
        self.calls.append((mailfrom, data))


class FunctionLike:
    """A function look-alike (as Cython makes them) whose annotations raise."""

    def __init__(self, function):
        self._function = function
        self.__name__ = function.__name__
        self.__code__ = function.__code__
        self.__defaults__ = function.__defaults__
        self.__kwdefaults__ = function.__kwdefaults__

    @property
    def __annotations__(self):
        raise NameError("name 'Options' is not defined")

    def __call__(self, *args, **kwargs):
        return self._function(*args, **kwargs)


def test_broken_signature_raises():
    # the premise
    with pytest.raises(NameError):
        inspect.signature(BrokenSignature())
    with pytest.raises(NameError):
        inspect.signature(FunctionLike(lambda peer, mailfrom, rcpttos, data: None))


def test_callable_with_broken_signature_is_read_from_its_code():
    # __call__ is what runs: it takes no options
    assert smtpd_compat._accepted_options(BrokenSignature()) == frozenset()


def test_function_like_with_broken_annotations_is_read_from_its_code():
    def handler(peer, mailfrom, rcpttos, data, mail_options=None):
        pass

    accepted = smtpd_compat._accepted_options(FunctionLike(handler))
    assert accepted == frozenset({"mail_options"})


def test_unreadable_handler_is_called_as_311_called_it():
    """Nothing to read at all: both options are passed, as by 3.11's smtpd."""

    class Opaque:
        @property
        def __signature__(self):
            raise NameError("name 'Options' is not defined")

        # not a function, no __code__: nothing says what a call runs
        __call__ = staticmethod(functools.partial(print))

    assert smtpd_compat._accepted_options(Opaque()) is None
    assert smtpd_compat._options_for(Opaque(), dict(OPTIONS)) == OPTIONS


def test_options_for_survives_a_raising_func_attribute():
    class Odd:
        @property
        def __func__(self):
            raise NameError("name 'x' is not defined")

        def __call__(self, peer, mailfrom, rcpttos, data, rcpt_options=()):
            pass

    assert smtpd_compat._options_for(Odd(), dict(OPTIONS)) == {"rcpt_options": []}


@pytest.mark.parametrize("handler_class", ["broken", "function_like"])
def test_delivery_with_unreadable_signature(serve, connect, handler_class):
    calls = []

    def handler(peer, mailfrom, rcpttos, data):
        calls.append((mailfrom, rcpttos, data))

    if handler_class == "broken":
        process_message = BrokenSignature()
    else:
        process_message = FunctionLike(handler)

    class Server(smtpd_compat.SMTPServer):
        pass

    server = serve(Server)
    server.process_message = process_message
    client = connect(server)
    assert transaction(client) == OK
    if handler_class == "broken":
        assert process_message.calls == [("a@b", b"Hello")]
    else:
        assert calls == [("a@b", ["c@d"], b"Hello")]


# --- inspect.signature on 3.14+: annotations left unevaluated --------------------


def test_signature_asked_for_forward_references(handlers, monkeypatch):
    """With annotationlib present, signature() gets FORWARDREF.

    Simulated with a stand-in annotationlib and a signature() that fails
    unless it is asked for forward references, as 3.14's does here.
    """
    forwardref = object()
    fake = types.ModuleType("annotationlib")
    fake.Format = types.SimpleNamespace(FORWARDREF=forwardref)
    real_signature = inspect.signature
    formats = []

    def signature(obj, *, annotation_format=None, **kwargs):
        formats.append(annotation_format)
        if annotation_format is not forwardref:
            raise NameError("name 'Options' is not defined")
        return real_signature(obj, **kwargs)

    real_import = importlib.import_module

    def import_module(name, *args):
        return fake if name == "annotationlib" else real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.setattr(inspect, "signature", signature)
    accepted = smtpd_compat._accepted_options(handlers.Handler())
    assert accepted == frozenset({"rcpt_options"})
    assert formats == [forwardref]
    # A partial can only be read by signature() (it has no code of its own).
    bound = functools.partial(handlers.keyword_only, "peer")
    assert smtpd_compat._accepted_options(bound) == frozenset({"rcpt_options"})
    assert formats == [forwardref, forwardref]


# --- conformance scripts: test_smtplib's imports, old and new ---------------------

CONFORMANCE = Path(__file__).resolve().parent / "conformance"

# The lines by which test_smtplib imports asyncore and smtpd: 3.11, 3.12,
# 3.13 (unchanged in the newest CPython sources at hand), and the private
# spelling of CPython's main branch in 2021-2022 (bpo-28533), which may
# come back.
IMPORT_LINES = {
    "3.11": (
        "asyncore = warnings_helper.import_deprecated('asyncore')",
        "smtpd = warnings_helper.import_deprecated('smtpd')",
    ),
    "3.12": ("from test.support import asyncore", "from . import smtpd"),
    "3.13": ("from test.support import asyncore", "from test.support import smtpd"),
    "private": (
        "from test.support import _asyncore as asyncore",
        "from test.support import _smtpd as smtpd",
    ),
}


@pytest.fixture
def smtplib_script(monkeypatch):
    monkeypatch.syspath_prepend(str(CONFORMANCE))
    for name in ("run_cpython_test_smtplib", "_harness"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module("run_cpython_test_smtplib")


UPSTREAM_TEMPLATE = """import unittest
from test import support, mock_socket
{asyncore_line}
{smtpd_line}
from test.support import socket_helper

HOST = socket_helper.HOST
"""


def upstream_text(version):
    asyncore_line, smtpd_line = IMPORT_LINES[version]
    return UPSTREAM_TEMPLATE.format(asyncore_line=asyncore_line, smtpd_line=smtpd_line)


@pytest.mark.parametrize("version", sorted(IMPORT_LINES))
def test_smtplib_imports_rewritten(smtplib_script, version):
    original = upstream_text(version)
    adapted = smtplib_script.rewrite_lines(
        original, smtplib_script.REWRITES, "smtpd_compat"
    )
    original_lines = original.splitlines()
    adapted_lines = adapted.splitlines()
    changed = [
        (before, after)
        for before, after in zip(original_lines, adapted_lines)
        if before != after
    ]
    assert changed == [
        (
            IMPORT_LINES[version][0],
            "asyncore = __import__('smtpd_compat', fromlist=['asyncore']).asyncore",
        ),
        (IMPORT_LINES[version][1], "import smtpd_compat as smtpd"),
    ]
    # the rewritten lines import what the tests are meant to exercise
    namespace = {}
    exec("\n".join(after for _, after in changed), namespace)  # noqa: S102
    assert namespace["smtpd"] is smtpd_compat
    assert namespace["asyncore"] is smtpd_compat.asyncore


def test_smtplib_rewrite_refuses_an_unknown_import(smtplib_script):
    text = upstream_text("private").replace("_smtpd as smtpd", "_smtpd2 as smtpd")
    with pytest.raises(smtplib_script.ConformanceSetupError):
        smtplib_script.rewrite_lines(text, smtplib_script.REWRITES, "smtpd_compat")
