"""``python -m smtpd_compat``: run an SMTP server from the command line."""

from smtpd_compat import _main

_main()
