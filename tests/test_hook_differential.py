"""Hook-call differential: CPython 3.11's own smtpd against smtpd_compat.

The same scripted sessions (tests/differential/scenarios.py) run against
the standard library's smtpd, asynchat and asyncore under a CPython 3.11
interpreter (found at run time, in a separate process) and against
smtpd_compat under the interpreter running the tests.  Every method a
subclass can override is wrapped and recorded (tests/differential/
recorder.py): the calls with their arguments, results and exceptions, the
bytes given to send(), the channel attributes the hooks see, the output
of print(), DEBUGSTREAM and log_info(), warnings, and what the client has
received after each step.  The traces must be equal except for the
documented differences in tests/differential/compare.py, each tied to a
sentence of README.rst.

Without a CPython 3.11 (``SMTPD_COMPAT_REFERENCE_PYTHON``, else the newest
pyenv 3.11.x) and Python 3.10's smtpd.py (``SMTPD_COMPAT_REFERENCE_SMTPD310``,
else the newest pyenv 3.10.x) the tests fail: the comparison is the point.
"""

import json
import os
import re
import sys

import pytest

DIFFERENTIAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "differential")
if DIFFERENTIAL not in sys.path:
    sys.path.insert(0, DIFFERENTIAL)

import compare
import scenarios

SESSIONS = scenarios.generate()
BY_ID = {session["id"]: session for session in SESSIONS}
README = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst"
)


@pytest.fixture(scope="session")
def reference_recording():
    """Recorded once per test run, under CPython 3.11 with its own smtpd."""
    try:
        python = compare.find_reference_python()
        mailman = compare.find_mailman_reference()
    except compare.ReferenceNotFound as exc:
        pytest.fail("hook differential: %s" % exc, pytrace=False)
    return compare.record(python, "stdlib", mailman)


@pytest.fixture(scope="session")
def compat_recording():
    """smtpd_compat, under the interpreter running the tests."""
    return compare.record(sys.executable, "compat")


def test_enough_sessions_of_every_kind():
    assert len(SESSIONS) >= 200
    assert len(BY_ID) == len(SESSIONS), "session ids are not unique"
    families = {session["id"].split("-")[0] for session in SESSIONS}
    assert families >= {
        "plain",
        "errors",
        "verbs",
        "exceptions",
        "closes",
        "output",
        "debugging",
        "pureproxy",
        "mailman",
        "limits",
        "aliases",
        "server",
        "reimplemented",
        "collisions",
        "documented",
    }
    # the generator is deterministic: both processes replay the same scripts
    assert scenarios.generate() == SESSIONS


def test_every_rule_is_documented_and_used():
    with open(README, encoding="utf-8") as handle:
        readme = " ".join(handle.read().replace("``", "").split())
    used = {session["rule"] for session in SESSIONS if session["rule"]}
    assert used == set(compare.RULES)
    for rule in compare.RULES.values():
        assert rule.readme_quote in readme, (rule.name, rule.readme_quote)
        if rule.check is not None:
            for session in SESSIONS:
                if session["rule"] == rule.name:
                    assert session["expect"] and "step" in session["expect"], session[
                        "id"
                    ]
    for name, quote in compare.NORMALISATIONS:
        assert quote in readme, (name, quote)


def test_reference_is_the_standard_library(reference_recording, compat_recording):
    assert reference_recording["impl"] == "stdlib"
    assert reference_recording["python"].startswith("3.11.")
    assert os.sep + "python3.11" + os.sep + "smtpd.py" in reference_recording["module"]
    assert compat_recording["impl"] == "compat"
    assert compat_recording["python"] == sys.version.split()[0]
    assert "smtpd_compat" in compat_recording["module"]
    assert set(reference_recording["sessions"]) == set(BY_ID)
    assert set(compat_recording["sessions"]) == set(BY_ID)


def test_reference_runs_every_script_to_the_end(reference_recording):
    """The driver itself never fails on the reference, and each session
    reaches its end with the client's view recorded at every step."""
    for session_id, events in reference_recording["sessions"].items():
        kinds = [event[0] for event in events]
        assert "driver-error" not in kinds, (session_id, events[-1])
        assert kinds[-1] == "end", session_id
        assert "client" in kinds, session_id


def test_comparison_catches_a_changed_event(reference_recording):
    """The comparison can fail: one altered reply byte is reported."""
    session = BY_ID["plain-000"]
    events = reference_recording["sessions"]["plain-000"]
    assert compare.compare_session(session, events, events) is None
    changed = json.loads(json.dumps(events))
    index = min(i for i, e in enumerate(changed) if e[0] == "client" and "250 " in e[2])
    changed[index][2] = changed[index][2].replace("250 ", "251 ", 1)
    report = compare.compare_session(session, events, changed)
    assert report is not None
    assert "  ours: " + json.dumps(changed[index]) in report.splitlines()


@pytest.mark.parametrize("session_id", sorted(BY_ID), ids=str)
def test_hook_trace(session_id, reference_recording, compat_recording):
    session = BY_ID[session_id]
    report = compare.compare_session(
        session,
        reference_recording["sessions"][session_id],
        compat_recording["sessions"][session_id],
    )
    if report is not None:
        # the report names the first differing event; no traceback needed
        pytest.fail(report, pytrace=False)


def test_rule_quotes_are_plain_text():
    # README quotes are matched after dropping ``markup`` and folding
    # whitespace; a quote with markup left in would never match.
    for rule in compare.RULES.values():
        assert "``" not in rule.readme_quote
        assert not re.search(r"\s{2,}", rule.readme_quote)
