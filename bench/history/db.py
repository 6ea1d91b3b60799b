"""The history database: schema, versioned migrations, connection by URL.

SQLAlchemy Core, so one piece of code serves the embedded SQLite file and a team's
PostgreSQL server. The schema is versioned in its own table; the tool creates it on first use
and migrates older databases forward, step by step, in one transaction. A database newer than
this tool is refused rather than half-understood.

Several sweeps may append at once (shards of one sweep, two nightlies on one machine), so every
write is race-free on its own: rows go in with `INSERT ... ON CONFLICT DO NOTHING`, SQLite
transactions take the write lock when they begin (`BEGIN IMMEDIATE`, in WAL mode, waiting up
to BUSY_TIMEOUT_S for another writer), and PostgreSQL appends and schema creation are
serialised by advisory locks. SQLite's locks only hold between processes of one machine: processes on several
nodes must share a PostgreSQL server, never one SQLite file on a network filesystem.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.dml import Insert

from inferbench.config import CELL_AXES
from inferbench.errors import UserError
from inferbench.store.record import FIELDS, METRIC_COLUMNS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DIALECTS = ("sqlite", "postgresql")  # the two with ON CONFLICT DO NOTHING that history needs
BUSY_TIMEOUT_S = 60  # how long a SQLite writer waits for another one before giving up
# Any fixed 64-bit numbers: the PostgreSQL advisory locks that serialise schema creation and
# appends.
_SCHEMA_LOCK = 0x1BFE_2026_0027
_APPEND_LOCK = 0x1BFE_2026_0028

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

machines = sa.Table(
    "machines",
    metadata,
    sa.Column("fingerprint", sa.String(16), primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("cpu_model", sa.Text, nullable=False),
    sa.Column("isa", sa.Text, nullable=False),
    sa.Column("logical_cpus", sa.Integer),
    sa.Column("memory_gb", sa.Float),
    sa.Column("gpu", sa.Text, nullable=False),
)

# One row per append: a finished sweep, a gate run, or an imported run folder.
# Times are naive UTC: SQLite keeps no zone, and both backends then read back the same values.
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("run_path", sa.Text, nullable=False),
    sa.Column("profile", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(16), sa.ForeignKey("machines.fingerprint"), nullable=False),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("git_dirty", sa.Boolean),
    sa.Column("run_time", sa.DateTime(), nullable=False),
    sa.Column("recorded_at", sa.DateTime(), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Index("ix_runs_fingerprint_time", "fingerprint", "run_time"),
)

# The cell's axes as the results table keeps them: all but the shape, which came after this
# schema (a cell at another shape has a cell_key of its own).
RESULT_AXES = tuple(axis for axis in CELL_AXES if axis != "shape")
_SQL_TYPES: dict[type, type[sa.types.TypeEngine[Any]]] = {int: sa.Integer, str: sa.Text}

# Per cell, the summary figures the record marks as history metrics (METRIC_COLUMNS); the raw
# samples stay in the run folder (runs.run_path).
results = sa.Table(
    "results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_ref", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    # A hash of the whole cell record (and machine): appending the same run twice (resume,
    # import of a folder already recorded) adds nothing.
    sa.Column("digest", sa.String(32), nullable=False, unique=True),
    sa.Column("cell_key", sa.Text, nullable=False),
    *(sa.Column(axis, _SQL_TYPES[FIELDS[axis].type], nullable=False) for axis in RESULT_AXES),
    sa.Column("settings_hash", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    *(sa.Column(name, sa.Float) for name in METRIC_COLUMNS),
    sa.Column("iterations", sa.Integer),
    sa.Column("repeats", sa.Integer),
    sa.Column("capped", sa.Boolean),
    sa.Column("interfered", sa.Boolean),
    sa.Index("ix_results_cell", *RESULT_AXES[:4]),  # model, backend, precision, batch size
    sa.Index("ix_results_run", "run_ref"),
)

# Migration from version v to v + 1; each runs inside the upgrade's transaction.
Migration = Callable[[Connection], None]
MIGRATIONS: dict[int, Migration] = {}


def normalize_url(url: str) -> str:
    """A SQLAlchemy URL from what a user types: a plain path is a SQLite file, and
    `postgresql://` means psycopg 3 (SQLAlchemy's own default would be psycopg2)."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return sa.make_url(normalize_url(url)).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "<malformed URL>"


def connect(url: str) -> Engine:
    """An engine on `url` with the schema created or migrated to SCHEMA_VERSION."""
    try:
        parsed = sa.make_url(normalize_url(url))
    except (sa.exc.ArgumentError, ValueError):
        raise UserError(f"history: not a database URL or path: {safe_url(url)}") from None
    kwargs: dict[str, object] = {}
    backend = parsed.get_backend_name()
    if backend not in DIALECTS:
        raise UserError(f"history: cannot use {safe_url(url)}: only SQLite and PostgreSQL are supported")
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Two sweeps finishing together wait for each other's write instead of failing.
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
    elif importlib.util.find_spec("psycopg") is None:
        raise UserError("history: PostgreSQL needs psycopg: pip install 'inferbench[postgres]'")
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise UserError(f"history: cannot use {safe_url(url)}: {reason}") from None
    if engine.dialect.name == "sqlite":
        database = parsed.database or ""
        lock_path = Path(f"{database}.lock") if database and database != ":memory:" else None
        sa.event.listen(engine, "connect", functools.partial(_sqlite_connect, lock_path))
        sa.event.listen(engine, "begin", _sqlite_begin)
    try:
        with engine.begin() as conn:
            migrate(conn)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise UserError(f"history: cannot open {safe_url(url)}: {reason}") from None
    except BaseException:
        engine.dispose()  # close pooled connections now, not at garbage collection
        raise
    return engine


def _sqlite_connect(lock_path: Path | None, dbapi_connection: object, _record: object) -> None:
    # The driver's own BEGIN is deferred: two appenders would both read, then one would fail
    # to upgrade its lock (SQLITE_BUSY, no waiting). With the driver's transaction handling
    # off, _sqlite_begin starts every transaction itself.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    _use_wal(cursor, lock_path)
    cursor.close()


def _use_wal(cursor: Any, lock_path: Path | None) -> None:
    """WAL: readers (a `history` page) never block the writer nor wait for it. Persistent in
    the file, so only the first connection to a new file switches; an in-memory database
    answers "memory" and stays as it is. Several processes switching a new file at once get
    "database is locked" at once (SQLite does not wait out the busy timeout there) or, when
    retried, "disk I/O error": 8 of 360 opens failed so in 30 trials of 12 processes at once on
    2 vCPUs. So the check and the switch hold a lock file beside the database (0 of 360)."""
    try:
        lock = lock_path.open("a") if lock_path is not None else None
    except OSError:  # a read-only folder: nobody there can switch the file either
        lock = None
    if lock is None:
        cursor.execute("PRAGMA journal_mode=WAL")
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held for a few milliseconds; closing releases it
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")


def _sqlite_begin(conn: Connection) -> None:
    # The write lock is taken when the transaction begins, waiting up to BUSY_TIMEOUT_S
    # (the driver's timeout is SQLite's busy timeout): what a transaction reads stays true
    # until it commits, including the schema check of a database two processes create at once.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def lock_for_append(conn: Connection) -> None:
    """Make this transaction the only appender until it ends: SQLite's BEGIN IMMEDIATE has
    done so already; on PostgreSQL an advisory lock does. What the append reads first (which
    cells are recorded) then stays true until it commits, and appenders never deadlock."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_APPEND_LOCK)))


def insert_ignoring_duplicates(conn: Connection, table: sa.Table, key: str) -> Insert:
    """`INSERT ... ON CONFLICT (key) DO NOTHING` in the connection's dialect: a row another
    appender wrote first (or at the same moment) is skipped, never an IntegrityError."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=[key])


def current_version(conn: Connection) -> int | None:
    """The stored schema version; None for an empty database."""
    if not sa.inspect(conn).has_table("schema_version"):
        return None
    return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()


def migrate(conn: Connection, target: int = SCHEMA_VERSION) -> None:
    """Create the schema in an empty database, or upgrade an older one to `target`."""
    if conn.dialect.name == "postgresql":
        # Held to the end of the transaction: of two processes finding an empty database,
        # the second waits and then sees the first one's tables instead of creating them again.
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
    version = current_version(conn)
    if version is None:
        metadata.create_all(conn)
        conn.execute(schema_version.insert().values(version=target))
        return
    if version > target:
        raise UserError(
            f"history: the database has schema version {version}, newer than this inferbench "
            f"understands ({target}); upgrade inferbench"
        )
    while version < target:
        step = MIGRATIONS.get(version)
        if step is None:
            raise UserError(f"history: no migration from schema version {version} to {version + 1}")
        log.info("history: migrating schema %d -> %d", version, version + 1)
        step(conn)
        version += 1
        conn.execute(schema_version.update().values(version=version))
