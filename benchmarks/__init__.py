"""Benchmarks: smtpd_compat against CPython 3.11's smtpd, aiosmtpd and the
limit of the machine.

Run ``python -m benchmarks --help`` from the checkout.  The package is
cut by job:

``servers.py``
    the systems under test (run as a script by each target's interpreter)
``clients.py``
    the load generators (run as a script by the orchestrator's interpreter)
``procs.py``
    starting those processes and reading their CPU and memory
``venvs.py``
    the targets, their interpreters and virtual environments
``scenarios.py``
    the declared scenarios and their metrics
``report.py``
    the tables
``__main__.py``
    the command line

Only the standard library is used; aiosmtpd and pyasyncore are installed
into the targets' own virtual environments.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
AIOSMTPD_VERSION = "1.4.6"
PYENV_ROOT = os.path.expanduser(os.environ.get("PYENV_ROOT", "~/.pyenv"))
