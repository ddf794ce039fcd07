"""Makes ``import asynchat`` work on Python 3.12+, for code beside ``smtpd``.

This top-level module is installed next to the ``smtpd_compat`` package,
like the ``smtpd`` shim.

* Python 3.12 and later (no ``asynchat`` in the standard library):
  importing ``asynchat`` gives ``smtpd_compat.asynchat`` itself, so
  ``asynchat.async_chat`` is the class ``smtpd.SMTPChannel`` derives from:
  ``isinstance()`` checks hold and ``mock.patch("asynchat.async_chat.push")``
  reaches every channel.
* Python 3.11 and older: the standard library's ``asynchat`` is used (an
  installed copy of this file comes after it on ``sys.path``); should this
  file come first anyway (a checkout on ``PYTHONPATH``), it loads the
  standard library's module in its place.

The ``pyasynchat`` distribution also installs a top-level ``asynchat``;
install only one of the two.
"""

import sys

if sys.version_info >= (3, 12):
    import smtpd_compat.asynchat

    sys.modules[__name__] = smtpd_compat.asynchat
else:
    import importlib.machinery
    import importlib.util
    import sysconfig

    _spec = importlib.machinery.PathFinder.find_spec(
        "asynchat", [sysconfig.get_paths()["stdlib"]]
    )
    if _spec is None or _spec.loader is None:
        raise ImportError("the standard library's asynchat module was not found")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _module
    try:
        _spec.loader.exec_module(_module)
    except BaseException:
        del sys.modules[__name__]
        raise
