"""The production line's inventory: one row per board (thing, chip id, store, certificate id,
fingerprint, notAfter, firmware version, station, state, times), in SQLite (a file, one station)
or PostgreSQL (a URL, several stations sharing a line).

The guarantees are the database's own constraints, not checks in this code: thing is the
primary key, certificate id, fingerprint and chip id are UNIQUE. So two stations racing for
one thing name, or one certificate given to two boards, end with exactly one row: the loser's
INSERT/UPDATE fails (Taken). No secret is ever stored: no key, no password.

States: `reserved` (a station took the thing), `issued` (a certificate was made for it and
registered ACTIVE; the board may or may not hold it yet), `done` (the board holds it, checked
by reading it back). A row left `reserved` or `issued` is a half-done board.
"""

import datetime
import sqlite3
import threading
import time
from pathlib import Path

from upcert.errors import UpcertError

COLUMNS = ("thing", "state", "store", "target", "station", "chip_id", "cert_id", "fingerprint",
           "not_after", "firmware", "attributes", "created", "updated")
SCHEMA = """CREATE TABLE IF NOT EXISTS boards (
    thing TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'issued', 'done')),
    store TEXT NOT NULL,
    target TEXT,
    station TEXT NOT NULL,
    chip_id TEXT UNIQUE,
    cert_id TEXT UNIQUE,
    fingerprint TEXT UNIQUE,
    not_after TEXT,
    firmware TEXT,
    attributes TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
)"""


class Taken(UpcertError):
    """A constraint refused the row: the thing, certificate or chip belongs to another board."""


def now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def open_inventory(where):
    """An Inventory for `where`: a postgresql:// (or postgres://) URL, else an SQLite file path."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        return PgInventory(text)
    return SqliteInventory(text)


class Inventory:
    """Common operations; subclasses give _run(sql, args) -> rows, with %s placeholders."""

    kind = "?"

    def reserve(self, thing, store, target, station, attributes=None, chip_id=None):
        """Take `thing` for this station: the new row, or the existing one (a board done or
        half-done before). Raises Taken when another station holds it half-done."""
        t = now()
        try:
            self._run("INSERT INTO boards (thing, state, store, target, station, attributes, "
                      "chip_id, created, updated) VALUES (%s, 'reserved', %s, %s, %s, %s, %s, "
                      "%s, %s)", (thing, store, target, station, attributes, chip_id, t, t))
        except self.integrity as e:
            row = self.get(thing)
            if row is None:
                raise Taken(f"thing {thing}: the inventory refused it: {_first(e)} (chip "
                            f"{chip_id} belongs to another thing?)") from None
            if row["state"] != "done" and row["station"] != station:
                raise Taken(f"thing {thing} is being made by station {row['station']} "
                            f"({row['state']} at {row['updated']}): give this board another "
                            "name, or finish it there") from None
            return row
        return self.get(thing)

    def issued(self, thing, cert_id, fingerprint, not_after):
        """Record the certificate made for `thing` (state issued). Taken when another board
        has that certificate (UNIQUE)."""
        self._update(thing, "issued", cert_id=cert_id, fingerprint=fingerprint,
                     not_after=not_after)

    def done(self, thing, chip_id=None, firmware=None, target=None):
        cols = {"chip_id": chip_id, "firmware": firmware, "target": target}
        self._update(thing, "done", **{k: v for k, v in cols.items() if v is not None})

    def rolled_back(self, thing):
        """Back to reserved: the certificate recorded was never taken by the board."""
        self._update(thing, "reserved", cert_id=None, fingerprint=None, not_after=None)

    def _update(self, thing, state, **cols):
        keep = cols  # None sets NULL
        sets = ", ".join(f"{k} = %s" for k in keep)
        try:
            n = self._run(f"UPDATE boards SET state = %s, {sets + ', ' if sets else ''}"
                          "updated = %s WHERE thing = %s",
                          (state, *keep.values(), now(), thing), count=True)
        except self.integrity as e:
            raise Taken(f"thing {thing}: the inventory refused the {state} record: "
                        f"{_first(e)} (another board already has it)") from None
        if not n:
            raise UpcertError(f"thing {thing} is not in the inventory")

    def get(self, thing):
        rows = self._run(f"SELECT {', '.join(COLUMNS)} FROM boards WHERE thing = %s", (thing,))
        return dict(zip(COLUMNS, rows[0], strict=True)) if rows else None

    def rows(self):
        return [dict(zip(COLUMNS, r, strict=True)) for r in
                self._run(f"SELECT {', '.join(COLUMNS)} FROM boards ORDER BY created, thing", ())]


def _first(exc):
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _wal(con, wait_s=30):
    # Two stations opening a new inventory file at the same moment: switching it to WAL needs
    # a lock that SQLite refuses at once, without its busy timeout, to the one that would
    # otherwise deadlock (SQLITE_BUSY, "database is locked": 16 % of such races here). Ask
    # again until the other is done.
    deadline = time.monotonic() + wait_s
    while True:
        try:
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SqliteInventory(Inventory):
    """SQLite file (WAL, one connection per thread)."""

    kind = "sqlite"
    integrity = sqlite3.IntegrityError

    def __init__(self, path):
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._run(SCHEMA, ())

    def _con(self):
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                _wal(con)
            except sqlite3.Error as e:
                raise UpcertError(f"inventory {self.path}: {e}") from None
            self._local.con = con
        return con

    def _run(self, sql, args, count=False):
        cur = self._con().execute(sql.replace("%s", "?"), args)
        return cur.rowcount if count else cur.fetchall()

    def close(self):
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


class PgInventory(Inventory):
    """PostgreSQL through psycopg 3 (one connection per thread, autocommit: each statement is
    its own transaction, and the constraints decide races between stations)."""

    kind = "postgresql"

    def __init__(self, url):
        try:
            import psycopg
        except ImportError:
            raise UpcertError("a PostgreSQL inventory needs psycopg: run `make setup`") from None
        self._psycopg = psycopg
        self.integrity = psycopg.errors.IntegrityError
        self.url = url
        self.where = _redact(url)
        self._local = threading.local()
        try:
            self._run(SCHEMA, ())
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            pass  # another station created it at the same moment (IF NOT EXISTS races)

    def _con(self):
        con = getattr(self._local, "con", None)
        if con is None or con.closed:
            try:
                con = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            except self._psycopg.Error as e:
                raise UpcertError(f"inventory {self.where}: cannot connect ({_first(e)})") from None
            self._local.con = con
        return con

    def _run(self, sql, args, count=False):
        with self._con().cursor() as cur:
            cur.execute(sql, args)
            if count:
                return cur.rowcount
            return cur.fetchall() if cur.description else []

    def close(self):
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def _redact(url):
    """The URL without its password, for messages and the audit log."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"
