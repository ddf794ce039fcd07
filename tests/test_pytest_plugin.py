"""smtpd_compat.pytest_plugin: the smtpd_server fixture, run by pytester.

Each test writes a small test file and runs pytest on it.
Where smtpd-compat is installed (tox installs the wheel) pytest finds the
plugin through its ``pytest11`` entry point, and that path is the one
tested; from a bare checkout the plugin is named with ``-p``.
"""

import configparser
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from conftest import TIMEOUT, subprocess_env

import smtpd_compat

pytest_plugins = ["pytester"]

PLUGIN = "smtpd_compat.pytest_plugin"
SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"


def pytest11_entry_points():
    points = metadata.entry_points()
    if hasattr(points, "select"):
        return list(points.select(group="pytest11"))
    return list(points.get("pytest11", ()))  # Python 3.8 and 3.9


def entry_point_active():
    """Whether pytest will load the plugin by itself."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(point.value == PLUGIN for point in pytest11_entry_points())


def run_pytest(pytester, *args, in_child=False):
    """Run pytest on the pytester directory, in this process or a child.

    In this process the plugin's code counts for coverage; a child shows
    that nothing depends on the state of this process.
    """
    args = ("--strict-markers", "-p", "no:cacheprovider", *args)
    if not entry_point_active():
        args = ("-p", PLUGIN, *args)
    if in_child:
        return pytester.runpytest_subprocess(*args, timeout=60)
    return pytester.runpytest_inprocess(*args)


USING_THE_FIXTURE = """
    import smtplib
    import threading

    import pytest

    from smtpd_compat.capture import CapturingServer

    started = []

    def send(server, body="Subject: hi\\r\\n\\r\\nhello"):
        with smtplib.SMTP(*server.address, timeout=5) as client:
            client.sendmail("a@example.com", ["b@example.com"], body)

    def test_default_server_captures_bytes(smtpd_server):
        started.append(smtpd_server)
        assert smtpd_server.running
        assert smtpd_server.host == "127.0.0.1"
        send(smtpd_server)
        [mail] = smtpd_server.wait_for(1)
        assert mail.data == b"Subject: hi\\n\\nhello"
        assert mail.message["Subject"] == "hi"

    def test_previous_server_was_stopped(smtpd_server):
        assert not started[0].running
        assert smtpd_server.port != started[0].port or smtpd_server.running
        assert smtpd_server.messages == []

    @pytest.mark.smtpd_server(decode_data=True)
    def test_marker_decode_data(smtpd_server):
        send(smtpd_server)
        assert smtpd_server.wait_for(1)[0].data == "Subject: hi\\n\\nhello"

    @pytest.mark.smtpd_server(enable_SMTPUTF8=True, data_size_limit=100)
    def test_marker_smtputf8_and_size(smtpd_server):
        with smtplib.SMTP(*smtpd_server.address, timeout=5) as client:
            client.ehlo()
            assert client.has_extn("smtputf8")
            assert client.esmtp_features["size"] == "100"

    @pytest.mark.smtpd_server(data_size_limit=1000, decode_data=True)
    class TestClassMarker:
        def test_class_marker_applies(self, smtpd_server):
            assert smtpd_server.server.data_size_limit == 1000

        @pytest.mark.smtpd_server(data_size_limit=50)
        def test_closest_marker_wins_per_keyword(self, smtpd_server):
            assert smtpd_server.server.data_size_limit == 50
            assert smtpd_server.server._decode_data is True

    class Refusing(CapturingServer):
        def process_message(self, *args, **kwargs):
            super().process_message(*args, **kwargs)
            return "550 refused"

    @pytest.mark.smtpd_server(server_class=Refusing)
    def test_marker_server_class(smtpd_server):
        with pytest.raises(smtplib.SMTPDataError):
            send(smtpd_server)
        assert len(smtpd_server.messages) == 1

    @pytest.mark.smtpd_server("positional")
    def test_positional_marker_arguments_are_an_error(smtpd_server):
        pass

    def test_failing_test_still_stops_its_server(smtpd_server):
        started.append(smtpd_server)
        assert False, "deliberate failure"

    def test_nothing_left_running():
        assert not started[-1].running
        names = [thread.name for thread in threading.enumerate()]
        assert not [name for name in names if name.startswith("smtpd-controller")]
"""


def test_fixture_markers_and_teardown(pytester):
    pytester.makepyfile(test_inner=textwrap.dedent(USING_THE_FIXTURE))
    result = run_pytest(pytester, "-v")
    result.assert_outcomes(passed=8, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_positional_marker_arguments_are_an_error ERROR*",
            "*test_failing_test_still_stops_its_server FAILED*",
            "*keyword arguments only*",
            "*deliberate failure*",
        ]
    )


USING_INI_SETTINGS = """
    import pytest

    def test_ini_settings(smtpd_server):
        assert smtpd_server.host == "127.0.0.1"
        assert smtpd_server.server._decode_data is True
        assert smtpd_server.server.data_size_limit is None

    @pytest.mark.smtpd_server(enable_SMTPUTF8=True)
    def test_marker_turning_smtputf8_on_drops_ini_decode_data(smtpd_server):
        assert smtpd_server.server.enable_SMTPUTF8 is True
        assert smtpd_server.server._decode_data is False
"""


def test_ini_settings_and_their_override(pytester):
    pytester.makeini(
        """
        [pytest]
        smtpd_server_host = 127.0.0.1
        smtpd_server_decode_data = true
        smtpd_server_data_size_limit = none
        """
    )
    pytester.makepyfile(test_inner=textwrap.dedent(USING_INI_SETTINGS))
    result = run_pytest(pytester, in_child=True)
    result.assert_outcomes(passed=2)


def test_bad_ini_size_is_a_usage_error(pytester):
    pytester.makeini(
        """
        [pytest]
        smtpd_server_data_size_limit = lots
        """
    )
    pytester.makepyfile(test_inner="def test_nothing(): pass")
    result = run_pytest(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*smtpd_server_data_size_limit must be a number*"])


def test_setup_cfg_declares_the_entry_point():
    if not SETUP_CFG.is_file():
        pytest.skip("no setup.cfg next to the tests")
    config = configparser.ConfigParser()
    config.read(SETUP_CFG, encoding="utf-8")
    declared = config["options.entry_points"]["pytest11"].split("\n")
    assert "smtpd_compat.pytest_plugin = smtpd_compat.pytest_plugin" in declared


def test_installed_distribution_has_the_entry_point():
    """Run where the package under test is installed (tox installs the wheel).

    A checkout's own smtpd_compat.egg-info may be stale, so it is not used.
    """
    package_file = Path(smtpd_compat.__file__).resolve()
    if "site-packages" not in package_file.parts:
        pytest.skip("the smtpd_compat under test is not an installed one")
    distribution = metadata.distribution("smtpd-compat")
    installed = Path(str(distribution.locate_file("smtpd_compat/__init__.py")))
    assert installed.resolve() == package_file
    points = [p for p in distribution.entry_points if p.group == "pytest11"]
    assert [(p.name, p.value) for p in points] == [(PLUGIN, PLUGIN)]


CHECKING_THE_REGISTRATION = """
    def test_plugin_registered_once_under_its_module_name(pytestconfig):
        import smtpd_compat.pytest_plugin as plugin

        manager = pytestconfig.pluginmanager
        assert manager.get_plugin("smtpd_compat.pytest_plugin") is plugin
        names = [name for name, value in manager.list_name_plugin() if value is plugin]
        assert names == ["smtpd_compat.pytest_plugin"]

    def test_fixture_works(smtpd_server):
        assert smtpd_server.running
"""


def test_explicit_p_option_next_to_the_entry_point(pytester):
    """``-p smtpd_compat.pytest_plugin`` must work where the entry point does too.

    With the entry point named other than the module, pytest refused to start
    ("Plugin already registered under a different name").
    """
    pytester.makepyfile(test_inner=textwrap.dedent(CHECKING_THE_REGISTRATION))
    result = run_pytest(pytester, "-p", PLUGIN, in_child=True)
    assert "already registered" not in str(result.stderr)
    result.assert_outcomes(passed=2)


MARKERS_TURNING_BOTH_ON = """
    import pytest

    pytestmark = pytest.mark.smtpd_server(decode_data=True)

    def test_module_marker_alone(smtpd_server):
        assert smtpd_server.server._decode_data is True
        assert smtpd_server.server.enable_SMTPUTF8 is False

    @pytest.mark.smtpd_server(enable_SMTPUTF8=True)
    def test_test_marker_beats_module_marker(smtpd_server):
        assert smtpd_server.server.enable_SMTPUTF8 is True
        assert smtpd_server.server._decode_data is False

    @pytest.mark.smtpd_server(enable_SMTPUTF8=True)
    class TestSmtputf8:
        def test_class_marker_beats_module_marker(self, smtpd_server):
            assert smtpd_server.server.enable_SMTPUTF8 is True
            assert smtpd_server.server._decode_data is False

        @pytest.mark.smtpd_server(decode_data=True)
        def test_test_marker_beats_class_marker(self, smtpd_server):
            assert smtpd_server.server._decode_data is True
            assert smtpd_server.server.enable_SMTPUTF8 is False

    @pytest.mark.smtpd_server(decode_data=True, enable_SMTPUTF8=True)
    def test_one_marker_with_both(smtpd_server):
        pass

    @pytest.mark.smtpd_server(enable_SMTPUTF8=True)
    @pytest.mark.smtpd_server(data_size_limit=10, decode_data=True)
    def test_two_markers_on_one_test(smtpd_server):
        pass
"""


def test_markers_turning_on_decode_data_and_smtputf8(pytester):
    pytester.makepyfile(test_inner=textwrap.dedent(MARKERS_TURNING_BOTH_ON))
    result = run_pytest(pytester, "-v")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            (
                "*UsageError: smtpd_server fixture: decode_data and enable_SMTPUTF8 "
                "cannot both be true; they are turned on both by "
                "@pytest.mark.smtpd_server(decode_data=True, enable_SMTPUTF8=True) "
                "on test_inner.py::test_one_marker_with_both"
            ),
            (
                "*UsageError: smtpd_server fixture: decode_data and enable_SMTPUTF8 "
                "cannot both be true; they are turned on decode_data by "
                "@pytest.mark.smtpd_server(data_size_limit=10, decode_data=True) "
                "on test_inner.py::test_two_markers_on_one_test and enable_SMTPUTF8 "
                "by @pytest.mark.smtpd_server(enable_SMTPUTF8=True) "
                "on test_inner.py::test_two_markers_on_one_test"
            ),
        ]
    )
    assert "ValueError" not in result.stdout.str()


def test_ini_options_turning_both_on(pytester):
    pytester.makeini(
        """
        [pytest]
        smtpd_server_decode_data = true
        smtpd_server_smtputf8 = true
        """
    )
    pytester.makepyfile(
        test_inner="""
        import pytest

        def test_both_from_the_ini_file(smtpd_server):
            pass

        @pytest.mark.smtpd_server(decode_data=True)
        def test_marker_settles_it(smtpd_server):
            assert smtpd_server.server._decode_data is True
            assert smtpd_server.server.enable_SMTPUTF8 is False
        """
    )
    result = run_pytest(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            (
                "*UsageError: smtpd_server fixture: decode_data and enable_SMTPUTF8 "
                "cannot both be true; they are turned on decode_data by the ini "
                "option smtpd_server_decode_data and enable_SMTPUTF8 by the ini "
                "option smtpd_server_smtputf8"
            ),
        ]
    )


def test_importing_the_package_does_not_import_pytest():
    code = (
        "import sys, smtpd_compat, smtpd_compat.controller, smtpd_compat.capture\n"
        "print('pytest' in sys.modules, '_pytest' in sys.modules)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["False", "False"]
