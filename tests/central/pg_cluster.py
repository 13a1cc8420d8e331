"""A throwaway PostgreSQL cluster for tests: ``initdb`` into a temp dir, ``pg_ctl`` on a free port.

Tests skip only when the binaries are absent (CI installs them). PostgreSQL refuses to run as
root, so under root (containers) the cluster belongs to the ``postgres`` user (or ``nobody``) and
is started through ``runuser``; the data directory is made outside pytest's root-only tmp tree.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.broker import free_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def available() -> bool:
    return all(_binary(n) for n in ("initdb", "pg_ctl"))


def _as_user() -> tuple[list[str], pwd.struct_passwd | None]:
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], entry
    raise RuntimeError("running as root and no postgres/nobody user to own the test cluster")


@contextlib.contextmanager
def postgres_cluster(*, durable: bool = False) -> Iterator[str]:
    """Start a cluster; yield its URL (``postgresql://test@127.0.0.1:PORT/central``).

    By default durability is off (``fsync``, ``synchronous_commit``, ``full_page_writes``): a
    throwaway cluster measures CPU, not the disk, and a crash loses it anyway. ``durable``
    keeps PostgreSQL's defaults for those three — what a production server runs."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    assert initdb and pg_ctl
    prefix, owner = _as_user()
    base = Path(tempfile.mkdtemp(prefix="central-pg-"))
    data = base / "data"
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    port = free_port()
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True,  # noqa: E731
                                      timeout=120)
    try:
        run(initdb, "-D", str(data), "-U", "test", "--auth=trust", "-E", "UTF8",
            "--locale=C")
        opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} "
                "-c max_connections=50")
        if not durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "-t", "60",
            "start")
        url = f"postgresql://test@127.0.0.1:{port}/postgres"
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE central")
        yield f"postgresql://test@127.0.0.1:{port}/central"
    finally:
        with contextlib.suppress(Exception):
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)
