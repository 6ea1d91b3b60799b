"""A throw-away PostgreSQL server for the history tests, from the distribution's packages.

`make test` installs Debian's postgresql when it can (root + apt); without the server
binaries or psycopg the PostgreSQL half of the history tests is skipped with the reason.
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the
Debian package creates. It listens on 127.0.0.1 only, on a free port, with trust auth.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def server_binaries() -> tuple[Path | None, str]:
    """The folder holding initdb and postgres, or None and why not."""
    if importlib.util.find_spec("psycopg") is None:
        return None, "psycopg not installed (pip install 'inferbench[postgres]')"
    candidates = []
    if shutil.which("pg_config"):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder, ""
    return (
        None,
        "no PostgreSQL server binaries (make test installs Debian's postgresql when root + apt allow)",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> tuple[dict[str, object], str | None]:
    """Popen arguments that run the server as a non-root user (none needed when not root)."""
    if os.geteuid() != 0:
        return {}, None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        return {}, "running as root and there is no 'postgres' user to run the server as"
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}, None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yields its base URL (`postgresql://inferbench@127.0.0.1:PORT`)."""
    bindir, why = server_binaries()
    if bindir is None:
        raise RuntimeError(why)
    as_user, why = _server_user()
    if why:
        raise RuntimeError(why)
    # Not under pytest's tmp_path: its root folder is private to root, and the server user
    # must be able to reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="inferbench-pg-"))
    data = base / "data"
    if as_user:
        shutil.chown(base, user="postgres")
    port = _free_port()
    proc = None
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "inferbench", "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=base,
            **as_user,  # type: ignore[call-overload]
        )
        proc = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(base),
                "-h",
                "127.0.0.1",
                "-c",
                "fsync=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=base,
            **as_user,  # type: ignore[call-overload]
        )
        url = f"postgresql://inferbench@127.0.0.1:{port}"
        _wait_ready(url, proc)
        yield url
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with code {proc.returncode} while starting")
        try:
            with psycopg.connect(url + "/postgres", connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def create_database(base_url: str, name: str) -> str:
    """A fresh database on the server; returns its URL."""
    import psycopg

    with psycopg.connect(base_url + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"
