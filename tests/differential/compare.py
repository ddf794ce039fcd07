#!/usr/bin/env python3
"""Compare hook-call recordings of CPython 3.11's smtpd and smtpd_compat.

``python compare.py`` finds the reference interpreter, runs recorder.py
under it and under the current interpreter (with smtpd_compat), and
prints one line per session that differs, with the first differing event;
``--ref FILE --compat FILE`` compares saved recordings instead.

The traces of a session must be equal, except for the documented
differences below.  Each one is tied to an item of README.rst's
"Differences from the standard library" section, and is applied only to
the sessions or events it names:

* ``NORMALISATIONS`` apply to every session: they rewrite events of both
  traces that differ for a documented reason that has nothing to do with
  what the session tests.
* ``RULES`` apply to the sessions whose ``rule`` names them.  A masking
  rule rewrites some events, after which the traces must be equal.  A
  divergence rule lets the traces differ from the step where 3.11 crashed,
  hung or mishandled mail (``expect["step"]``): everything before that
  step must be equal, the first difference must lie in it, and the rule's
  check states what both sides must have done from there on.

Standard library only.
"""

import argparse
import ast
import json
import os
import re
import subprocess
import sys

# tests/, for the lookup of the reference interpreters shared by all tests.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from reference_pythons import (
    reference_python,
    reference_stdlib_file,
    where_to_look,
)

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDER = os.path.join(HERE, "recorder.py")
REFERENCE_ENV = "SMTPD_COMPAT_REFERENCE_PYTHON"
MAILMAN_ENV = "SMTPD_COMPAT_REFERENCE_SMTPD310"
LOCAL_ERROR = b"451 Requested action aborted: local error in processing\r\n"

# ---------------------------------------------------------------------------
# Finding the reference
# ---------------------------------------------------------------------------


class ReferenceNotFound(Exception):
    """The CPython 3.11 interpreter (or 3.10's smtpd.py) is not there."""


def find_reference_python():
    """The CPython 3.11 interpreter whose smtpd is the reference."""
    override = os.environ.get(REFERENCE_ENV)
    if override:
        if not os.access(override, os.X_OK):
            raise ReferenceNotFound(
                "%s=%s is not an executable" % (REFERENCE_ENV, override)
            )
        return override
    found = reference_python(11)
    if found is None:
        raise ReferenceNotFound(
            "no CPython 3.11 found: set %s to a Python 3.11 interpreter (its "
            "smtpd, asynchat and asyncore are the reference), or install one "
            "with pyenv (looked in %s)" % (REFERENCE_ENV, where_to_look(11))
        )
    return found


def find_mailman_reference():
    """Python 3.10's smtpd.py, the last one with MailmanProxy."""
    override = os.environ.get(MAILMAN_ENV)
    if override:
        if not os.path.isfile(override):
            raise ReferenceNotFound("%s=%s is not a file" % (MAILMAN_ENV, override))
        return override
    found = reference_stdlib_file(10, "smtpd.py")
    if found is None:
        raise ReferenceNotFound(
            "no Python 3.10 smtpd.py found (MailmanProxy's reference): set %s "
            "to its path, or install CPython 3.10 with pyenv (looked in "
            "%s)" % (MAILMAN_ENV, where_to_look(10))
        )
    return found


def record(python, impl, mailman_reference=None, only=None, timeout=300):
    """Run recorder.py; return its parsed JSON (raise on failure)."""
    command = [python, RECORDER, "--impl", impl]
    if mailman_reference:
        command += ["--mailman-reference", mailman_reference]
    if only:
        command += ["--only"] + list(only)
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=HERE,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            "%s exited with status %d\n--- stderr ---\n%s"
            % (" ".join(command), proc.returncode, proc.stderr[-4000:])
        )
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------------
# Reading traces
# ---------------------------------------------------------------------------


def step_bounds(events, number):
    """(start, end) indexes of step ``number``'s events."""
    start = end = None
    for index, event in enumerate(events):
        if event[0] == "step":
            if start is not None:
                end = index
                break
            if event[1] == number:
                start = index
    if start is None:
        return None, None
    return start, end if end is not None else len(events)


def step_events(events, number):
    start, end = step_bounds(events, number)
    return [] if start is None else events[start:end]


def received(events, number):
    """(bytes, state) the client read at step ``number``, or (None, None)."""
    for event in step_events(events, number):
        if event[0] == "client" and event[1] == number:
            text = event[2]
            if text.startswith(("b'", 'b"')):
                return ast.literal_eval(text), event[3]
            return text, event[3]
    return None, None


def log_lines(events):
    return [e[3] for e in events if e[0] == "call" and e[2].endswith(".log_info")]


def is_call(event, suffix):
    return event[0] == "call" and event[2].endswith(suffix)


def end_state(events):
    for event in reversed(events):
        if event[0] == "end":
            return event[1]
    return None


# ---------------------------------------------------------------------------
# Normalisations for every session
# ---------------------------------------------------------------------------

# README, "Changes that do not alter what a program sees": "the listen
# backlog is 1024 instead of 5, and up to 64 waiting connections are
# accepted per pass of the loop".  So listen()'s argument is not compared,
# and smtpd_compat's last accept() of a pass, which finds nobody waiting and
# returns None, is dropped (3.11 calls accept() once per readable event and
# in these scripted sessions never gets None).
NORMALISATIONS = [
    ("listen-backlog", "the listen backlog is 1024 instead of 5"),
    (
        "accepts-per-pass",
        "up to 64 waiting connections are accepted per pass of the loop",
    ),
    # 3.11 sets rcpt_options before it checks the parameters, so the hooks
    # smtp_RCPT calls (_getparams) see the new value earlier; the value
    # process_message() gets is still compared.
    ("rcpt-options-attribute", "rcpt_options is set by accepted RCPT commands only."),
]


def normalise(events, compat):
    out = []
    for event in events:
        if event[0] == "attrs" and "rcpt_options" in event[2]:
            changed = {k: v for k, v in event[2].items() if k != "rcpt_options"}
            if not changed:
                continue
            event = ["attrs", event[1], changed]
        if is_call(event, "srv.listen") and len(event) >= 4:
            event = event[:3] + ["(<backlog>)"] + event[4:]
        if (
            compat
            and event[:4] == ["call", event[1], "srv.accept", "()"]
            and event[4:] == ["None"]
        ):
            continue
        out.append(event)
    return out


# ---------------------------------------------------------------------------
# Documented differences
# ---------------------------------------------------------------------------


class Rule:
    """A documented difference; ``readme_quote`` is text of README.rst
    (without ``markup``, whitespace folded) that documents it."""

    def __init__(self, name, readme_quote, description, mask=None, check=None):
        self.name = name
        self.readme_quote = readme_quote
        self.description = description
        self.mask = mask  # events -> events, applied to both traces
        self.check = check  # (ref, compat, expect) -> list of problems


def _mask_rcpt_options(events):
    out = []
    for event in events:
        if event[0] == "attrs" and "rcpt_options" in event[2]:
            changed = {k: v for k, v in event[2].items() if k != "rcpt_options"}
            if not changed:
                continue
            event = ["attrs", event[1], changed]
        if event[0] == "call" and event[2].endswith(".process_message"):
            event = list(event)
            event[3] = re.sub(
                r"rcpt_options=\[[^\]]*\]", "rcpt_options=<masked>", event[3]
            )
        out.append(event)
    return out


def _mask_mailman_loads(events):
    """MailList.MailList() calls moved out of line, to the end."""
    out = [event for event in events if event[:2] != ["mailman", "'MailList'"]]
    loads = [event[2:] for event in events if event[:2] == ["mailman", "'MailList'"]]
    return out + [["mailman MailList calls", loads]]


def _after(problems, compat, expect):
    """smtpd_compat's replies in the steps after the documented one."""
    after = expect.get("after")
    step = expect["step"]
    if after is None:
        return
    for offset, wanted in enumerate(after, 1):
        got, state = received(compat, step + offset)
        if got != wanted:
            problems.append(
                "smtpd_compat step %d: expected %r, client got %r (%s)"
                % (step + offset, wanted, got, state)
            )


def _check_handler_error(ref, compat, expect):
    problems = []
    step = expect["step"]
    ref_data, _ = received(ref, step)
    got, state = received(compat, step)
    if not isinstance(got, bytes) or not isinstance(ref_data, bytes):
        problems.append("no client data at step %d" % step)
        return problems
    if not got.startswith(ref_data + LOCAL_ERROR):
        problems.append(
            "smtpd_compat step %d: expected what 3.11 sent (%r) and then %r, "
            "client got %r" % (step, ref_data, LOCAL_ERROR, got)
        )
    ref_logs = log_lines(step_events(ref, step))
    compat_logs = log_lines(step_events(compat, step))
    if not ref_logs or compat_logs[: len(ref_logs)] != ref_logs:
        problems.append(
            "log_info() at step %d: 3.11 logged %r, smtpd_compat %r"
            % (step, ref_logs, compat_logs)
        )
    if expect.get("after") is None:
        if state == "open":
            problems.append("smtpd_compat kept the connection open at step %d" % step)
    elif state != "open":
        problems.append("smtpd_compat closed the connection at step %d" % step)
    _after(problems, compat, expect)
    return problems


def _check_too_much_mail(ref, compat, expect):
    problems = []
    step = expect["step"]
    for side, events in (("3.11", ref), ("smtpd_compat", compat)):
        got, _ = received(events, step)
        if got != b"552 Error: Too much mail data\r\n":
            problems.append(
                "%s step %d: client got %r, not the 552 reply" % (side, step, got)
            )
    got, _ = received(ref, step + 1)
    if got != b"":
        problems.append("3.11 answered a command after 552: %r" % (got,))
    _after(problems, compat, expect)
    return problems


def _check_quit_pipelined(ref, compat, expect):
    problems = []
    step = expect["step"]
    for side, events in (("3.11", ref), ("smtpd_compat", compat)):
        got, state = received(events, step)
        if got != expect["reply"] or state == "open":
            problems.append(
                "%s step %d: client got %r (%s), expected %r and the end of the "
                "connection" % (side, step, got, state, expect["reply"])
            )
    events = step_events(compat, step)
    quit_at = [i for i, e in enumerate(events) if is_call(e, ".smtp_QUIT")]
    later = (
        [e[2] for e in events[quit_at[0] + 1 :] if e[0] == "call" and ".smtp_" in e[2]]
        if quit_at
        else []
    )
    if not quit_at or later:
        problems.append("smtpd_compat ran %r after QUIT" % later)
    return problems


def _check_keeps_listening(ref, compat, expect):
    problems = []
    step = expect["step"]
    # 3.11 then closes the server, whose default handle_close() logs
    # "unhandled close event" as well: only the error line is shared.
    ref_logs = log_lines(step_events(ref, step))[:1]
    compat_logs = log_lines(step_events(compat, step))
    if not ref_logs or compat_logs != ref_logs:
        problems.append(
            "log_info(): 3.11 logged %r, smtpd_compat %r" % (ref_logs, compat_logs)
        )
    if "srv" in (end_state(ref) or []):
        problems.append("3.11's server was still listening")
    if "srv" not in (end_state(compat) or []):
        problems.append("smtpd_compat's server stopped listening")
    return problems


def _check_type_error_relayed(ref, compat, expect):
    """3.11 fails with TypeError on process_message; smtpd_compat answers."""
    problems = []
    step = expect["step"]
    failed = [
        e
        for e in step_events(ref, step)
        if e[0] in ("call", "raise")
        and e[2].endswith(".process_message")
        and "raise" in e
        and "TypeError" in e[-1]
        or e[0] == "raise"
        and e[2].endswith(".process_message")
        and "TypeError" in e[-1]
    ]
    if not failed:
        problems.append("3.11's process_message() did not fail with TypeError")
    got, state = received(compat, step)
    if got != expect["reply"] or state != "open":
        problems.append(
            "smtpd_compat step %d: client got %r (%s), expected %r"
            % (step, got, state, expect["reply"])
        )
    _after(problems, compat, expect)
    return problems


def _check_refusals(ref, compat, expect):
    problems = []
    step = expect["step"]
    got, _ = received(ref, step)
    if got != b"250 OK\r\n":
        problems.append("3.11 step %d: client got %r, not 250 OK" % (step, got))
    got, _ = received(compat, step)
    if got != expect["reply"]:
        problems.append(
            "smtpd_compat step %d: client got %r, expected %r"
            % (step, got, expect["reply"])
        )
    _after(problems, compat, expect)
    return problems


RULES = {
    rule.name: rule
    for rule in [
        Rule(
            "handler-error-451",
            "The same holds for exceptions raised by smtp_* command methods, including those of subclasses.",
            "3.11 logs the exception and closes the connection; smtpd_compat "
            "sends what 3.11 sent, then the 451 reply, logs the same line, and "
            "keeps the connection (except for NotImplementedError)",
            check=_check_handler_error,
        ),
        Rule(
            "too-much-mail-552",
            "After 552 Error: Too much mail data the session is back in command state with the transaction reset.",
            "both send 552; 3.11 stays in DATA state, smtpd_compat resets",
            check=_check_too_much_mail,
        ),
        Rule(
            "quit-pipelined",
            "Commands pipelined after QUIT are ignored.",
            "both send the same bytes and close; 3.11 runs the commands after "
            "QUIT (their replies are never sent), smtpd_compat does not",
            check=_check_quit_pipelined,
        ),
        Rule(
            "rcpt-options-refused",
            "rcpt_options is set by accepted RCPT commands only.",
            "rcpt_options is not compared (attribute snapshots and "
            "process_message's keyword argument)",
            mask=_mask_rcpt_options,
        ),
        Rule(
            "server-error-keeps-listening",
            "SMTPServer.handle_error() reports the error and keeps listening.",
            "both log the same line; 3.11 closes the listening socket",
            check=_check_keeps_listening,
        ),
        Rule(
            "old-process-message",
            "A process_message() without **kwargs (the old signature) is called without mail_options/rcpt_options.",
            "3.11 fails with TypeError; smtpd_compat delivers",
            check=_check_type_error_relayed,
        ),
        Rule(
            "pureproxy-bytes",
            "TypeError on every message (process_message() lacked **kwargs and treated bytes as str): nothing was relayed.",
            "3.11's PureProxy fails with TypeError without decode_data; "
            "smtpd_compat relays",
            check=_check_type_error_relayed,
        ),
        Rule(
            "pureproxy-refusals",
            "PureProxy answers 451 or 554 when every recipient was refused or the upstream server could not be reached.",
            "3.11 answers 250 OK when every recipient was refused upstream; "
            "smtpd_compat answers 554",
            check=_check_refusals,
        ),
        Rule(
            "mailman-load-order",
            "The message is parsed and the lists are loaded before the relay; "
            "the list copies are queued after it.",
            "MailList.MailList() calls are compared as a sequence of their own, "
            "not where they happen (3.10 loads each list right before its first "
            "Enqueue(), after the relay)",
            mask=_mask_mailman_loads,
        ),
    ]
}

# Sessions the generator leaves out because 3.11 crashes or hangs in a way
# that leaves nothing to compare hook by hook (the connection drops with a
# traceback from inside smtpd, or never answers).  Each is a documented
# difference covered by tests/test_differences.py.
EXCLUDED = [
    ("command line that is not valid UTF-8", "UnicodeDecodeError in found_terminator"),
    (
        "reply echoing non-ASCII text or control characters",
        "UnicodeEncodeError in push(); control characters echoed",
    ),
    (
        "address the email parser cannot read (<, @, a@b@c ...)",
        "IndexError/HeaderParseError in _getaddr",
    ),
    (
        "SIZE without a value, or with non-ASCII digits",
        "AttributeError/ValueError in smtp_MAIL",
    ),
    (
        "decode_data=True with non-UTF-8 data or a character split across reads",
        "UnicodeDecodeError in collect_incoming_data",
    ),
    ("DATA followed at once by the end-of-data line", "3.11 never answers"),
    (
        "process_message returning a UTF-8 status in an SMTPUTF8 transaction",
        "UnicodeEncodeError after require_SMTPUTF8 was reset",
    ),
    ("MailmanProxy without the Mailman package", "ImportError in process_message"),
]


# ---------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------


def first_difference(left, right):
    for index, (a, b) in enumerate(zip(left, right)):
        if a != b:
            return index
    if len(left) != len(right):
        return min(len(left), len(right))
    return None


def _short(event, width=400):
    text = json.dumps(event, ensure_ascii=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_difference(ref, compat, index, context=6):
    lines = []
    for event in ref[max(0, index - context) : index]:
        lines.append("      " + _short(event))
    lines.append(
        "  3.11: " + (_short(ref[index]) if index < len(ref) else "<end of trace>")
    )
    lines.append(
        "  ours: "
        + (_short(compat[index]) if index < len(compat) else "<end of trace>")
    )
    following = compat[index + 1 : index + 4]
    for event in following:
        lines.append("  ours+ " + _short(event))
    return "\n".join(lines)


def current_step(events, index):
    for event in reversed(events[: index + 1]):
        if event[0] == "step":
            return event[1]
    return None


def drop_attrs(events, names):
    """The events without the attributes ``names`` (for exploring: see
    what differs beyond a known mismatch)."""
    out = []
    for event in events:
        if event[0] == "attrs":
            changed = {k: v for k, v in event[2].items() if k not in names}
            if not changed:
                continue
            event = ["attrs", event[1], changed]
        out.append(event)
    return out


def compare_session(session, ref_events, compat_events, ignore_attrs=()):
    """None when the traces agree, else a readable explanation."""
    ref = normalise(ref_events, compat=False)
    compat = normalise(compat_events, compat=True)
    if ignore_attrs:
        ref, compat = drop_attrs(ref, ignore_attrs), drop_attrs(compat, ignore_attrs)
    rule = RULES.get(session.get("rule")) if session.get("rule") else None
    if rule and rule.mask:
        ref, compat = rule.mask(ref), rule.mask(compat)
    index = first_difference(ref, compat)
    header = "%s: %s" % (session["id"], session["desc"])
    if rule is None or rule.check is None:
        if index is None:
            return None
        return "%s\n  first difference at event %d (step %s):\n%s" % (
            header,
            index,
            current_step(ref, index),
            describe_difference(ref, compat, index),
        )
    expect = session["expect"]
    if index is None:
        return "%s\n  documented difference %r not seen: both traces are equal" % (
            header,
            rule.name,
        )
    start, _ = step_bounds(ref, expect["step"])
    if start is None or index < start:
        return (
            "%s\n  difference before the documented step %d (rule %r), at event %d:\n%s"
            % (
                header,
                expect["step"],
                rule.name,
                index,
                describe_difference(ref, compat, index),
            )
        )
    problems = rule.check(ref, compat, expect)
    if problems:
        return (
            "%s\n  documented difference %r, but:\n    %s\n  first difference at event %d:\n%s"
            % (
                header,
                rule.name,
                "\n    ".join(problems),
                index,
                describe_difference(ref, compat, index),
            )
        )
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", help="saved reference recording (JSON)")
    parser.add_argument("--compat", help="saved smtpd_compat recording (JSON)")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the smtpd_compat run"
    )
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--save", help="directory to keep both recordings in")
    parser.add_argument(
        "--ignore-attr",
        action="append",
        default=[],
        help="leave this channel attribute out (to look past a known difference)",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, HERE)
    import scenarios

    if args.ref:
        with open(args.ref, encoding="utf-8") as handle:
            ref = json.load(handle)
    else:
        ref = record(
            find_reference_python(), "stdlib", find_mailman_reference(), args.only
        )
    if args.compat:
        with open(args.compat, encoding="utf-8") as handle:
            compat = json.load(handle)
    else:
        compat = record(args.python, "compat", None, args.only)
    if args.save:
        for name, data in (("ref.json", ref), ("compat.json", compat)):
            with open(os.path.join(args.save, name), "w", encoding="utf-8") as handle:
                json.dump(data, handle)
    failures = 0
    wanted = set(args.only or ())
    sessions = [
        s
        for s in scenarios.generate()
        if s["id"] in ref["sessions"] and (not wanted or s["id"] in wanted)
    ]
    for session in sessions:
        if session["id"] not in compat["sessions"]:
            print("%s: missing from the smtpd_compat recording" % session["id"])
            failures += 1
            continue
        report = compare_session(
            session,
            ref["sessions"][session["id"]],
            compat["sessions"][session["id"]],
            args.ignore_attr,
        )
        if report:
            failures += 1
            print(report)
            print()
    print(
        "%d of %d sessions differ (reference %s, smtpd_compat on %s)"
        % (failures, len(sessions), ref["python"], compat["python"])
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
