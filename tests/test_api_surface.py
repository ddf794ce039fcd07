"""smtpd_compat offers everything CPython 3.11's smtpd and asynchat offered.

The reference modules only exist in the standard library of Python 3.11 and
older, so they are described by a 3.11 interpreter in a subprocess (and
``MailmanProxy``, which 3.11 had already dropped, by a 3.10 one).  The same
describing code then runs in this process on ``smtpd_compat`` and
``smtpd_compat.asynchat``, and the two descriptions are compared:

* every public module attribute of the reference exists in ours, of the same
  kind (module, class, function, or data of the same type and value);
* every class has the reference's bases in the same order in its MRO, and
  every member the reference class has - methods, properties, class and
  static methods, class attributes, including the single-underscore ones
  subclasses override or call - with the same kind;
* every function and method has the same parameters: names, kinds, order
  and default values;
* an instance built the way the reference builds it (a server, and a
  channel on a real accepted connection) has every instance attribute the
  reference instance has, holding a value of the same type.

We may offer more than the reference; never less, and nothing different,
except the few extras listed (with their reasons) in ALLOWED_EXTRA_PARAMETERS.

The reference interpreter is ``$SMTPD_COMPAT_REFERENCE_PYTHON`` if set, else
the newest pyenv 3.11 (``$SMTPD_COMPAT_REFERENCE_PYTHON_3_10`` or the newest
pyenv 3.10 for MailmanProxy).  When none is found the test fails: without it
nothing is checked.
"""

import json
import subprocess

import pytest
import reference_pythons

import smtpd_compat
import smtpd_compat.asynchat

# The describing code: executed both in the reference interpreter (through
# ``python -c``) and in this process, so both sides are described by the
# very same rules.  It must run on every Python from 3.8 on.
DESCRIBER = r'''
import collections
import inspect
import socket
import types
import warnings

_SIMPLE = (int, float, str, bytes, bool, type(None), tuple, frozenset, list)
_NO_DEFAULT = "<no default>"


def signature_of(function):
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    return [
        [
            parameter.name,
            parameter.kind.name,
            _NO_DEFAULT
            if parameter.default is inspect.Parameter.empty
            else repr(parameter.default),
        ]
        for parameter in signature.parameters.values()
    ]


def value_of(value):
    if isinstance(value, _SIMPLE):
        return {"type": type(value).__name__, "repr": repr(value)}
    if isinstance(value, collections.defaultdict):
        factory = value.default_factory
        return {
            "type": "defaultdict",
            "repr": "default %r" % (factory() if factory else None,),
        }
    return {"type": type(value).__name__, "repr": None}


def member_of(cls, name):
    raw = None
    owner = None
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            owner = klass
            break
    if owner is object:
        return None
    if isinstance(raw, property):
        return {
            "kind": "property",
            "setter": raw.fset is not None,
            "deleter": raw.fdel is not None,
        }
    if isinstance(raw, staticmethod):
        return {"kind": "staticmethod", "signature": signature_of(raw.__func__)}
    if isinstance(raw, classmethod):
        return {"kind": "classmethod", "signature": signature_of(raw.__func__)}
    if isinstance(raw, (types.FunctionType, types.BuiltinFunctionType)):
        return {"kind": "method", "signature": signature_of(raw)}
    if inspect.isclass(raw):
        return {"kind": "class", "name": raw.__name__}
    if raw is None and owner is None:
        return None
    described = {"kind": "data"}
    described.update(value_of(raw))
    return described


def class_of(cls):
    members = {}
    for name in dir(cls):
        if name in ("__dict__", "__weakref__", "__doc__", "__module__"):
            continue
        member = member_of(cls, name)
        if member is not None:
            members[name] = member
    return {
        "kind": "class",
        "name": cls.__name__,
        "mro": [klass.__name__ for klass in cls.__mro__],
        "members": members,
    }


def attribute_of(value, module_name):
    if isinstance(value, types.ModuleType):
        return {"kind": "module", "name": value.__name__}
    if inspect.isclass(value):
        if value.__module__ == module_name:
            return class_of(value)
        return {
            "kind": "foreign class",
            "origin": "%s.%s" % (value.__module__, value.__qualname__),
        }
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        described = {"kind": "function", "signature": signature_of(value)}
        if value.__module__ != module_name:
            described["origin"] = "%s.%s" % (value.__module__, value.__qualname__)
        return described
    described = {"kind": "data"}
    described.update(value_of(value))
    return described


def module_of(module):
    names = [
        name
        for name in dir(module)
        if not name.startswith("_") or name in ("__all__", "__version__")
    ]
    return {name: attribute_of(getattr(module, name), module.__name__) for name in names}


def instance_types(instance):
    """Type names of what an instance holds: its own attributes, and the
    values its properties give (one implementation may keep in a property
    what another keeps in the instance dict)."""
    found = {name: type(value).__name__ for name, value in vars(instance).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in dir(type(instance)):
            if name not in found and isinstance(
                inspect.getattr_static(instance, name, None), property
            ):
                try:
                    found[name] = type(getattr(instance, name)).__name__
                except Exception:
                    pass
    return found


def instances_of(smtpd, asynchat):
    """Instance attributes of a server, a channel and a bare async_chat."""
    sockets = []
    socket_map = {}
    result = {}
    try:
        server = smtpd.SMTPServer(("127.0.0.1", 0), None, map=socket_map)
        result["SMTPServer"] = instance_types(server)
        listener = socket.create_server(("127.0.0.1", 0))
        sockets.append(listener)
        listener.settimeout(5)
        for name, build in (
            (
                "SMTPChannel",
                lambda conn, addr: smtpd.SMTPChannel(server, conn, addr, map=socket_map),
            ),
            (
                "SMTPChannel(decode_data=True)",
                lambda conn, addr: smtpd.SMTPChannel(
                    server, conn, addr, map=socket_map, decode_data=True
                ),
            ),
            ("async_chat", lambda conn, addr: asynchat.async_chat(conn, map=socket_map)),
        ):
            client = socket.create_connection(listener.getsockname()[:2], timeout=5)
            sockets.append(client)
            conn, addr = listener.accept()
            sockets.append(conn)
            result[name] = instance_types(build(conn, addr))
    finally:
        for dispatcher in list(socket_map.values()):
            dispatcher.close()
        for sock in sockets:
            sock.close()
    return result


def describe(smtpd, asynchat):
    return {
        "smtpd": module_of(smtpd),
        "asynchat": module_of(asynchat),
        "instances": instances_of(smtpd, asynchat),
    }
'''

REFERENCE_SCRIPT = (
    DESCRIBER
    + r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import smtpd, asynchat
if sys.argv[1] == "full":
    print(json.dumps(describe(smtpd, asynchat)))
else:
    print(json.dumps(class_of(smtpd.MailmanProxy)))
"""
)

# Parameters we have beyond the reference's, by "Class.method": each must
# come after all of the reference's parameters, so that every call that
# worked with 3.11 still means the same.
# README "TLS and AUTH (opt-in)": keyword only, all off by default.
TLS_AND_AUTH = {
    "tls_context",
    "ssl_context",
    "require_starttls",
    "authenticator",
    "auth_required",
    "auth_require_tls",
}
ALLOWED_EXTRA_PARAMETERS = {
    # README "Robustness / Idle clients": an opt-in idle timeout, keyword
    # only, so no positional call can reach it by accident.
    "SMTPServer.__init__": {"idle_timeout", *TLS_AND_AUTH},
    "DebuggingServer.__init__": {"idle_timeout", *TLS_AND_AUTH},
    # README "Differences from the standard library": PureProxy relays (3.11
    # raised TypeError on every message because its process_message() had no
    # **kwargs while the channel passed mail_options/rcpt_options).
    "PureProxy.process_message": {"kwargs"},
    # MailmanProxy is a PureProxy and relays likewise (3.10 had the same bug).
    "MailmanProxy.process_message": {"kwargs"},
}


def reference_python(minor):
    """The interpreter whose standard library is the reference (3.<minor>)."""
    python = reference_pythons.reference_python(minor)
    if not python:
        pytest.fail(
            "no Python 3.%d found to describe the reference smtpd: set %s to a"
            " CPython 3.%d interpreter, or install one with pyenv"
            % (minor, reference_pythons.INTERPRETER_VARIABLES[minor], minor)
        )
    return python


def _describe_reference(minor, what):
    python = reference_python(minor)
    done = subprocess.run(
        [python, "-c", REFERENCE_SCRIPT, what],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, "%s failed to describe smtpd:\n%s" % (
        python,
        done.stderr,
    )
    return json.loads(done.stdout)


_describer = {}
# The same describing code as the reference subprocess runs.
exec(DESCRIBER, _describer)  # noqa: S102


@pytest.fixture(scope="module")
def reference():
    return _describe_reference(11, "full")


@pytest.fixture(scope="module")
def ours():
    return _describer["describe"](smtpd_compat, smtpd_compat.asynchat)


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------


def _compare_signature(where, expected, got, problems):
    if expected is None:
        return
    if got is None:
        problems.append("%s: no signature (reference: %s)" % (where, expected))
        return
    common = got[: len(expected)]
    if common != expected:
        problems.append(
            "%s: parameters %s, reference has %s" % (where, _show(got), _show(expected))
        )
        return
    extra = got[len(expected) :]
    allowed = ALLOWED_EXTRA_PARAMETERS.get(where.split(" ")[-1], set())
    for name, kind, default in extra:
        if name not in allowed:
            problems.append(
                "%s: extra parameter %r not in the reference" % (where, name)
            )
        elif kind not in ("KEYWORD_ONLY", "VAR_KEYWORD") and default == "<no default>":
            problems.append("%s: extra parameter %r is required" % (where, name))


def _show(signature):
    shown = []
    for name, kind, default in signature:
        prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(kind, "")
        suffix = "" if default == "<no default>" else "=" + default
        shown.append(prefix + name + suffix + ("/kw" if kind == "KEYWORD_ONLY" else ""))
    return "(" + ", ".join(shown) + ")"


def _compare_class(where, expected, got, problems):
    if got.get("kind") != "class":
        problems.append("%s: is %s, reference is a class" % (where, got.get("kind")))
        return
    # Our classes may have more bases (a helper class, or on 3.11 and older
    # the standard library's async_chat under ours), but must keep the
    # reference's, in the same order.
    position = 0
    for base in expected["mro"]:
        try:
            position = got["mro"].index(base, position) + 1
        except ValueError:
            problems.append(
                "%s: MRO %s lacks %s (reference %s)"
                % (where, got["mro"], base, expected["mro"])
            )
            break
    for name, member in sorted(expected["members"].items()):
        mine = got["members"].get(name)
        qualified = "%s.%s" % (expected["name"], name)
        if mine is None:
            problems.append(
                "%s: no member %s (reference: %s)" % (where, qualified, member)
            )
            continue
        if mine["kind"] != member["kind"]:
            problems.append(
                "%s: %s is a %s, reference has a %s"
                % (where, qualified, mine["kind"], member["kind"])
            )
            continue
        if "signature" in member:
            _compare_signature(
                "%s %s" % (where.split(" ")[0], qualified),
                member["signature"],
                mine["signature"],
                problems,
            )
        elif member["kind"] == "property":
            for accessor in ("setter", "deleter"):
                if member[accessor] and not mine[accessor]:
                    problems.append(
                        "%s: property %s has no %s" % (where, qualified, accessor)
                    )
        elif member["kind"] == "data" and [mine["type"], mine["repr"]] != [
            member["type"],
            member["repr"],
        ]:
            problems.append(
                "%s: %s = %s %s, reference %s %s"
                % (
                    where,
                    qualified,
                    mine["type"],
                    mine["repr"],
                    member["type"],
                    member["repr"],
                )
            )


# Module attributes whose value is expected to differ: the program name is
# sys.argv[0] of whichever process imported the module.
_VALUE_NOT_COMPARED = {"program"}
# Modules the reference imported that ours exposes as an equivalent module.
_EQUIVALENT_MODULES = {
    "asynchat": {"asynchat", "smtpd_compat.asynchat"},
    # pyasyncore installs itself as "asyncore" on 3.12+.
    "asyncore": {"asyncore"},
}


def compare_modules(module_name, expected, got):
    problems = []
    for name, attribute in sorted(expected.items()):
        where = "%s.%s" % (module_name, name)
        mine = got.get(name)
        if mine is None:
            problems.append("%s: missing (reference: %s)" % (where, attribute["kind"]))
            continue
        kind = attribute["kind"]
        if kind == "class":
            _compare_class(where, attribute, mine, problems)
        elif mine["kind"] != kind:
            problems.append(
                "%s: is a %s, reference has a %s" % (where, mine["kind"], kind)
            )
        elif kind == "module":
            accepted = _EQUIVALENT_MODULES.get(attribute["name"], {attribute["name"]})
            if mine["name"] not in accepted:
                problems.append(
                    "%s: is module %s, reference %s"
                    % (where, mine["name"], attribute["name"])
                )
        elif kind == "function":
            if attribute.get("origin") != mine.get("origin"):
                problems.append(
                    "%s: is %s, reference %s"
                    % (
                        where,
                        mine.get("origin", "our own"),
                        attribute.get("origin", "its own"),
                    )
                )
            elif "origin" not in attribute:
                # Imported from elsewhere (warnings.warn, ...): the same
                # object, whose signature this Python may not expose.
                _compare_signature(
                    where, attribute["signature"], mine["signature"], problems
                )
        elif kind == "foreign class":
            if attribute["origin"] != mine["origin"]:
                problems.append(
                    "%s: is %s, reference %s"
                    % (where, mine["origin"], attribute["origin"])
                )
        elif kind == "data" and name not in _VALUE_NOT_COMPARED:
            if name == "__all__":
                missing = set(eval(attribute["repr"])) - set(eval(mine["repr"]))
                if missing:
                    problems.append("%s: lacks %s" % (where, sorted(missing)))
            elif (mine["type"], mine["repr"]) != (attribute["type"], attribute["repr"]):
                problems.append(
                    "%s: %s %s, reference %s %s"
                    % (
                        where,
                        mine["type"],
                        mine["repr"],
                        attribute["type"],
                        attribute["repr"],
                    )
                )
    return problems


def compare_instances(expected, got):
    problems = []
    for what, attributes in sorted(expected.items()):
        for name, type_name in sorted(attributes.items()):
            mine = got[what].get(name)
            if mine is None:
                problems.append(
                    "%s instance: no attribute %s (%s)" % (what, name, type_name)
                )
            elif mine != type_name:
                problems.append(
                    "%s instance: %s is a %s, reference a %s"
                    % (what, name, mine, type_name)
                )
    return problems


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_reference_is_described(reference):
    # Guards the comparison itself: a describer that saw nothing would make
    # every other test pass vacuously.
    channel = reference["smtpd"]["SMTPChannel"]
    assert channel["mro"] == ["SMTPChannel", "async_chat", "dispatcher", "object"]
    assert channel["members"]["smtp_MAIL"]["signature"] == [
        ["self", "POSITIONAL_OR_KEYWORD", "<no default>"],
        ["arg", "POSITIONAL_OR_KEYWORD", "<no default>"],
    ]
    assert channel["members"]["_SMTPChannel__greeting"] == {
        "kind": "property",
        "setter": True,
        "deleter": False,
    }
    assert (
        reference["smtpd"]["__version__"]["repr"] == "'Python SMTP proxy version 0.3'"
    )
    assert reference["instances"]["SMTPChannel"]["received_lines"] == "list"


def _report(problems):
    return "differences from the reference:\n" + "\n".join(problems)


def test_smtpd_module_surface(reference, ours):
    problems = compare_modules("smtpd", reference["smtpd"], ours["smtpd"])
    assert problems == [], _report(problems)


def test_asynchat_module_surface(reference, ours):
    problems = compare_modules("asynchat", reference["asynchat"], ours["asynchat"])
    assert problems == [], _report(problems)


def test_instance_attributes(reference, ours):
    problems = compare_instances(reference["instances"], ours["instances"])
    assert problems == [], _report(problems)


def test_mailman_proxy_surface_matches_python_3_10():
    expected = _describe_reference(10, "mailman")
    assert (
        expected["name"] == "MailmanProxy" and "process_message" in expected["members"]
    )
    got = _describer["class_of"](smtpd_compat.MailmanProxy)
    problems = []
    _compare_class("smtpd.MailmanProxy", expected, got, problems)
    assert problems == [], _report(problems)


def test_comparison_reports_what_is_missing_or_different():
    # The comparison must be able to fail: feed it a doctored description.
    expected = {
        "f": {
            "kind": "function",
            "signature": [["a", "POSITIONAL_OR_KEYWORD", "1"]],
        },
        "gone": {"kind": "data", "type": "int", "repr": "1"},
    }
    got = {
        "f": {"kind": "function", "signature": [["a", "POSITIONAL_OR_KEYWORD", "2"]]}
    }
    assert compare_modules("m", expected, got) == [
        "m.f: parameters (a=2), reference has (a=1)",
        "m.gone: missing (reference: data)",
    ]


@pytest.mark.parametrize(
    "extra, problem",
    [
        (["idle_timeout", "KEYWORD_ONLY", "None"], None),
        (["surprise", "KEYWORD_ONLY", "None"], "extra parameter 'surprise'"),
    ],
)
def test_only_listed_extra_parameters_are_allowed(extra, problem):
    base = [["self", "POSITIONAL_OR_KEYWORD", "<no default>"]]
    problems = []
    _compare_signature(
        "smtpd.SMTPServer SMTPServer.__init__", base, base + [extra], problems
    )
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]
