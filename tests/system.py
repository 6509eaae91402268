"""The machine's programs and services that integration tests use (Debian's packages).

`require_program` finds a program or, when it is missing, skips the test naming the Debian
package to install, except under ``CI=true`` where a missing program fails the test: CI must
never pass by skipping. `make test` (.ci/system-deps) installs them when run as root.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from twisted.trial.unittest import SkipTest


def _missing(what: str, package: str) -> Exception:
    reason = f"{what} is needed: install Debian's {package} (make test does it as root)"
    if os.environ.get("CI"):
        return AssertionError(reason)
    return SkipTest(reason)


def require_program(*names: str, package: str) -> str:
    """The path of the first of ``names`` found on PATH (or in /usr/sbin, /sbin)."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if found is not None:
            return found
    raise _missing(names[0], package)


def require_service(host: str, port: int, *, what: str, package: str) -> None:
    """A local service answering on ``host:port`` (e.g. RabbitMQ on 5672), or the test is
    skipped naming the Debian package (failed under CI=true)."""
    import socket

    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        raise _missing(f"{what} on {host}:{port}", package) from None


def require_module(name: str, *, pip: str) -> Any:
    """The Python module ``name`` (a third-party peer the tests check fep against), or the
    test is skipped naming the PyPI package of the ``test`` extra (failed under CI=true)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        reason = f"the Python package {pip} is needed: pip install '{pip}' (the test extra)"
        if os.environ.get("CI"):
            raise AssertionError(reason) from None
        raise SkipTest(reason) from None
