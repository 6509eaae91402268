"""The PostgreSQL test harness: finds or starts a server and gives each test its own database.

``postgres_server()`` gives a base URL, trying in order: the ``FEP_TEST_POSTGRES`` environment
variable; the server on 127.0.0.1:5432 (user postgres) if it answers; a throwaway cluster made
with ``initdb`` (as an unprivileged user, ``postgres`` when we are root) in a temp dir on a
free port, stopped at process exit. Without any of them the test is skipped with the reason,
except under ``CI=true`` where it fails: CI must never pass by skipping the database.
``fresh_database(testcase)`` creates ``fep_test_<random>`` and drops it once the test is done.
The shared server is never stopped.

Dropping a database takes one to two seconds on this machine's server (it waits for the
files to go) and creating one a few tenths: both run on a few threads of their own while the
tests run. A test's database is dropped after it; the next test's empty database is created
while this one runs (a spare, taken by the next ``fresh_database`` of the process). The test
process waits for the threads before it exits and then drops a spare nobody took (a drop
that fails is reported on stderr), so no database is left behind and no test waits for one.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from glob import glob
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from twisted.trial.unittest import SkipTest

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

_found: str | None = None
_failure: str | None = None


class NoPostgres(Exception):
    """No PostgreSQL server could be had under CI=true."""


def _answers(url: str) -> bool:
    try:
        conn = psycopg2.connect(url, connect_timeout=3)
    except psycopg2.Error:
        return False
    conn.close()
    return True


def _initdb() -> str | None:
    found = shutil.which("initdb")
    if found:
        return found
    candidates = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def throwaway_cluster() -> str:
    """Start a private cluster with initdb; returns its URL, stops it at exit. Raises
    RuntimeError with the reason when it cannot."""
    initdb = _initdb()
    if initdb is None:
        raise RuntimeError("initdb is not on PATH")
    pg_ctl = os.path.join(os.path.dirname(os.path.realpath(initdb)), "pg_ctl")
    run_as: dict[str, Any] = {}
    base = tempfile.mkdtemp(prefix="fep-pg-")
    if os.geteuid() == 0:
        # initdb refuses root: run the cluster as the unprivileged postgres user.
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no 'postgres' user for initdb")
        os.chown(base, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid}
    data = os.path.join(base, "data")
    port = _free_port()
    try:
        subprocess.run(
            [initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=base,
            **run_as,
        )
        subprocess.run(
            [
                pg_ctl,
                "-D",
                data,
                "-l",
                os.path.join(base, "log"),
                "-w",
                "-t",
                "30",
                "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            cwd=base,
            **run_as,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"throwaway cluster failed: {e} {detail.decode(errors='replace')}")

    def stop() -> None:
        subprocess.run(
            [pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True, cwd=base, **run_as
        )
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(stop)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def postgres_server() -> str:
    """A base URL of a server the tests may create databases on (see the module doc)."""
    global _found, _failure
    if _found is not None:
        return _found
    if _failure is None:
        env = os.environ.get("FEP_TEST_POSTGRES")
        if env:
            _found = env
        elif _answers(LOCAL_SERVER):
            _found = LOCAL_SERVER
        else:
            try:
                _found = throwaway_cluster()
            except RuntimeError as e:
                _failure = (
                    f"no PostgreSQL: FEP_TEST_POSTGRES is unset, nothing answers on "
                    f"127.0.0.1:5432, and no throwaway cluster ({e})"
                )
    if _found is not None:
        return _found
    assert _failure is not None
    if os.environ.get("CI") == "true":
        raise NoPostgres(_failure + "; CI=true requires a PostgreSQL server")
    raise SkipTest(_failure)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _admin(url: str, statement: str) -> None:
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


_dropper: ThreadPoolExecutor | None = None
_dropper_lock = threading.Lock()
# Per server: the empty database the next fresh_database takes, being created meanwhile.
_spares: dict[str, Future[str]] = {}
_spares_dropped_at_exit = False


def _report_failed_drop(name: str, done: Future[None]) -> None:
    error = done.exception()
    if error is not None:
        print(f"tests.postgres: could not drop database {name}: {error}", file=sys.stderr)


def _background() -> ThreadPoolExecutor:
    global _dropper
    if _dropper is None:
        _dropper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fep-test-db")
    return _dropper


def drop_later(base: str, name: str) -> None:
    """Drop database ``name`` on a background thread. The threads' queue is worked off
    before the process exits (`concurrent.futures` joins its threads at interpreter exit),
    so a test run leaves no database behind."""
    with _dropper_lock:
        done = _background().submit(
            _admin, base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    done.add_done_callback(lambda d: _report_failed_drop(name, d))


def _create_database(base: str) -> str:
    name = f"fep_test_{secrets.token_hex(6)}"
    _admin(base, f"CREATE DATABASE {name}")
    return name


def _drop_spares() -> None:
    """At exit, after the background threads are done: drop the spares nobody took."""
    for base, spare in list(_spares.items()):
        _spares.pop(base, None)
        try:
            name = spare.result()
        except Exception:
            continue
        try:
            _admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except psycopg2.Error as e:
            print(f"tests.postgres: could not drop database {name}: {e}", file=sys.stderr)


def fresh_database(testcase: Any) -> str:
    """An empty database for one test (the spare made while the previous test ran, or a
    new one), dropped in the background once the test is done: cleanups added after this
    one (closing the test's connections, stopping a daemon) run first, and a connection
    still open is ended by the drop."""
    global _spares_dropped_at_exit
    base = postgres_server()
    with _dropper_lock:
        spare = _spares.pop(base, None)
    name = None
    if spare is not None:
        try:
            name = spare.result()
        except Exception:
            name = None  # made again below, where a failure is the test's own
    if name is None:
        name = _create_database(base)
    with _dropper_lock:
        if not _spares_dropped_at_exit:
            # Registered after postgres_server()'s own exit handler (a throwaway cluster's
            # stop), so it runs first.
            atexit.register(_drop_spares)
            _spares_dropped_at_exit = True
        _spares[base] = _background().submit(_create_database, base)
    testcase.addCleanup(drop_later, base, name)
    return with_database(base, name)
