"""Start ``mutmut run`` with SIGINT handled as in an interactive shell.

A job that a non-interactive shell starts with ``&`` (CI, nohup, an
editor's task runner) has SIGINT ignored, and an ignored signal stays
ignored across exec(): the command-line servers that the tests start
would then ignore the SIGINT the tests stop them with, and mutmut's first,
unmutated pass would fail.  Setting SIGINT back to its default before
mutmut starts makes each child Python install its KeyboardInterrupt
handler again.

Usage (what ``tox -e mutation`` runs): python tests/mutation_run.py [mutmut run options]
"""

import os
import shutil
import signal
import sys


def main() -> None:
    mutmut = shutil.which("mutmut")
    if mutmut is None:
        sys.exit("mutmut is not installed in this environment")
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(mutmut, [mutmut, "run", *sys.argv[1:]])


if __name__ == "__main__":
    main()
