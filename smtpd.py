"""Makes ``import smtpd`` and ``python -m smtpd`` work on Python 3.12+.

This top-level module is installed next to the ``smtpd_compat`` package.

* Python 3.12 and later (no ``smtpd`` in the standard library): importing
  ``smtpd`` gives the ``smtpd_compat`` module object itself, so
  ``smtpd.DEBUGSTREAM = ...`` and the like act on ``smtpd_compat``;
  ``python -m smtpd ...`` runs smtpd_compat's command line.
* Python 3.11 and older: the standard library's ``smtpd`` is used.  An
  installed copy of this file comes after the standard library on
  ``sys.path`` and is never found; should it come first anyway (a checkout
  on ``PYTHONPATH``), it loads the standard library's module in its place.

The ``standard-smtpd`` distribution also installs a top-level ``smtpd``;
install only one of the two.
"""

import sys

if sys.version_info >= (3, 12):
    import smtpd_compat

    if __name__ == "__main__":
        smtpd_compat._main()
    else:
        sys.modules[__name__] = smtpd_compat
else:
    import importlib.machinery
    import importlib.util
    import runpy
    import sysconfig

    _spec = importlib.machinery.PathFinder.find_spec(
        "smtpd", [sysconfig.get_paths()["stdlib"]]
    )
    if _spec is None or _spec.loader is None or not _spec.origin:
        raise ImportError("the standard library's smtpd module was not found")
    if __name__ == "__main__":
        runpy.run_path(_spec.origin, run_name="__main__")
    else:
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[__name__] = _module
        try:
            _spec.loader.exec_module(_module)
        except BaseException:
            del sys.modules[__name__]
            raise
