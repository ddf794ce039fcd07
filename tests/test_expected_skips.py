"""The expected-skips check in conftest.py, and the list it reads.

Under tox (SMTPD_COMPAT_EXPECTED_SKIPS set) a skip that
tests/expected_skips.txt does not list for the running Python fails the
run; these tests check the matching and that every entry names a real test.
"""

import os
import re

import pytest
from conftest import (
    TESTS_DIR,
    _python_version_matches,
    read_expected_skips,
    unexpected_skips,
)

EXPECTED_SKIPS_FILE = os.path.join(TESTS_DIR, "expected_skips.txt")


@pytest.mark.parametrize(
    "spec,version,matches",
    [
        ("all", (3, 8), True),
        ("3.8-3.11", (3, 8), True),
        ("3.8-3.11", (3, 11), True),
        ("3.8-3.11", (3, 12), False),
        ("3.12+", (3, 11), False),
        ("3.12+", (3, 12), True),
        ("3.12+", (3, 15), True),
        ("3.10", (3, 10), True),
        ("3.10", (3, 11), False),
    ],
)
def test_version_specs(spec, version, matches):
    assert _python_version_matches(spec, version) is matches


def test_only_listed_skips_for_this_version_pass():
    expected = [
        ("3.8-3.11", "test_a.py::test_new", "only new"),
        ("3.12+", "test_a.py::test_old", "only old"),
    ]
    skips = [
        ("test_a.py::test_new", "only new"),
        ("test_a.py::test_old", "only old"),
        ("test_b.py::test_ipv6", "IPv6 loopback unavailable"),
    ]
    assert unexpected_skips(skips, expected, (3, 11)) == [
        ("test_a.py::test_old", "only old"),
        ("test_b.py::test_ipv6", "IPv6 loopback unavailable"),
    ]
    assert unexpected_skips(skips, expected, (3, 13)) == [
        ("test_a.py::test_new", "only new"),
        ("test_b.py::test_ipv6", "IPv6 loopback unavailable"),
    ]


def test_a_listed_test_skipping_for_another_reason_is_unexpected():
    expected = [("all", "test_a.py::test_x", "stdlib has no smtpd since 3.12")]
    skips = [("test_a.py::test_x", "IPv6 loopback unavailable")]
    assert unexpected_skips(skips, expected, (3, 12)) == skips


def test_malformed_line_is_an_error(tmp_path):
    path = tmp_path / "skips.txt"
    path.write_text("# comment\n\n3.12+ | test_a.py::test_x\n")
    with pytest.raises(ValueError, match=r"skips\.txt:3: not VERSIONS \| NODE ID"):
        read_expected_skips(str(path))


def test_every_listed_skip_names_an_existing_test():
    entries = read_expected_skips(EXPECTED_SKIPS_FILE)
    assert entries, "the list is empty"
    for versions, node_id, reason in entries:
        assert any(
            _python_version_matches(versions, (3, minor)) for minor in range(8, 20)
        ), versions
        path, _, name = node_id.partition("::")
        with open(os.path.join(TESTS_DIR, path), encoding="utf-8") as source:
            text = source.read()
        function = re.sub(r"\[.*\]\Z", "", name)
        assert re.search(r"^def %s\(" % re.escape(function), text, re.MULTILINE), (
            node_id
        )
        assert reason in text, (node_id, reason)
