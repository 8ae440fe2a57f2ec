"""Engine and sessions for the ledger database, and its Alembic migrations applied on first use.

The URL comes from ``--db`` (a SQLAlchemy URL without a password, or a plain file path for
SQLite), else the ``OBLIVIO_DB_URL`` environment variable, else the first line of the file named by
``OBLIVIO_DB_URL_FILE``, else ``sqlite:///oblivio.db`` in the working directory. A URL holding a
password never goes on a command line (the process list shows it to every user).
A SQLite ledger and its -wal/-shm files are created readable by their owner only (0600), whatever
the umask: they hold reasons and sample hashes.
SQLite runs in WAL mode and takes its write lock at the start of each transaction
(``BEGIN IMMEDIATE``), so concurrent processes queue instead of failing with "database is locked".
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from importlib.resources import files
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import OblivioError

DB_ENV = "OBLIVIO_DB_URL"
DB_FILE_ENV = "OBLIVIO_DB_URL_FILE"
DEFAULT_URL = "sqlite:///oblivio.db"
HEAD = "0002"  # newest migration; tests check it matches the scripts in migrations/versions
SQLITE_TIMEOUT_S = 60.0

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sqlite_writers: dict[int, threading.RLock] = {}  # per SQLite engine: threads queue here, not in SQLite's busy sleeps
_migrated: set[str] = set()


def _url_from_file() -> str | None:
    path = os.environ.get(DB_FILE_ENV)
    if not path:
        return None
    try:
        with open(path) as f:
            value = f.readline().strip()
    except OSError as e:
        raise OblivioError(f"cannot read ${DB_FILE_ENV} {path}: {e.strerror}") from None
    if not value:
        raise OblivioError(f"${DB_FILE_ENV} {path} is empty")
    return value


def resolve_url(db: str | None = None) -> str:
    """``db`` (URL or SQLite file path), else $OBLIVIO_DB_URL, else the file $OBLIVIO_DB_URL_FILE names, else ``sqlite:///oblivio.db``;
    a relative SQLite path is made absolute against the current folder."""
    value = db or os.environ.get(DB_ENV) or _url_from_file() or DEFAULT_URL
    if "\x00" in value:
        raise OblivioError("the database URL contains a NUL character")
    if "://" not in value:
        value = f"sqlite:///{value}"
    try:
        url = make_url(value)
    except ArgumentError:
        raise OblivioError(f"not a database URL: {value!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise OblivioError(f"unsupported database {url.get_backend_name()!r}; use sqlite or postgresql")
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") and not os.path.isabs(url.database):
        # the folder it is resolved in, now: engines are cached by URL, and a process may change folder
        value = url.set(database=os.path.abspath(url.database)).render_as_string(hide_password=False)
    return value


def check_cli_url(db: str | None) -> str | None:
    """``--db`` as given on a command line: refused when it carries a password (visible in the process list)."""
    if db and "://" in db:
        try:
            password = make_url(db).password
        except ArgumentError:
            raise OblivioError(f"not a database URL: {db.split('://')[0]}://...") from None
        if password:
            raise OblivioError(f"--db holds a password, which every user can read in the process list; put the URL in "
                               f"${DB_ENV} or in a file named by ${DB_FILE_ENV}")
    return db


PRIVATE = 0o600


def private_sqlite_file(path: str) -> None:
    """Create the SQLite file 0600 (its -wal and -shm files inherit its mode) and tighten existing ones we own."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE))
    except FileExistsError:
        pass
    for p in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        try:
            st = os.stat(p)
            if st.st_uid == os.geteuid() and st.st_mode & 0o077:
                os.chmod(p, PRIVATE)
        except OSError:
            continue


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("oblivio_read_only") else "BEGIN IMMEDIATE")


def get_engine(db: str | None = None) -> Engine:
    """The (cached) engine for ``db``, with the schema migrated to the newest version."""
    url = resolve_url(db)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                if parsed.database and parsed.database != ":memory:":
                    parent = os.path.dirname(os.path.abspath(parsed.database))
                    if not os.path.isdir(parent):
                        raise OblivioError(f"database folder does not exist: {parent}")
                    private_sqlite_file(os.path.abspath(parsed.database))
                engine = create_engine(url, connect_args={"timeout": SQLITE_TIMEOUT_S})
                _sqlite_setup(engine)
                _sqlite_writers[id(engine)] = threading.RLock()
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        if url not in _migrated:
            migrate(engine)
            _migrated.add(url)
    return engine


def current_revision(engine: Engine) -> str | None:
    """The schema version recorded in the database, or None for an empty database."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DatabaseError as e:  # also "file is not a database" (a text file given as --db)
        if "alembic_version" in str(e):
            return None
        raise OblivioError(f"cannot open the ledger database: {str(e.orig).splitlines()[0]}") from None


def alembic_config(engine: Engine):
    """An Alembic config pointing at the migration scripts shipped in this package."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("oblivio.ledger") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply the shipped migrations up to ``revision`` (a no-op when the schema is already there)."""
    if revision == "head" and current_revision(engine) == HEAD:
        return
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo migrations down to ``revision`` ("base": an empty database)."""
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    _migrated.discard(engine.url.render_as_string(hide_password=False))


@contextmanager
def session_scope(db: str | None = None, write: bool = True) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any error.

    ``write=False`` for reads: on SQLite they then do not queue for the write lock.
    """
    engine = get_engine(db)
    factory = sessionmaker(engine if write else engine.execution_options(oblivio_read_only=True), expire_on_commit=False)
    writer = _sqlite_writers.get(id(engine)) if write else None
    if writer is None:
        with factory() as session, session.begin():
            yield session
        return
    with writer, factory() as session, session.begin():
        yield session


def dispose_all() -> None:
    """Close every cached engine (tests; forked processes)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _sqlite_writers.clear()
        _migrated.clear()
