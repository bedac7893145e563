"""The local AWS IoT registry in one SQLite file: certificates (status, owner thing, ownership
tokens), things, and job executions. Shared by the provisioning service and the CLI (separate
processes): WAL mode, one short transaction per call, one connection per thread.
"""

import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from upcert.errors import UpcertError
from upcert.pki.certs import cert_id as _cert_id
from upcert.pki.certs import common_name, load_certificate

STATUSES = ("ACTIVE", "INACTIVE", "REVOKED", "PENDING_ACTIVATION")  # AWS CertificateStatus
TOKEN_TTL_S = 3600  # AWS: the ownership token expires after 1 h (fleet-provision-api)
TOKEN_BYTES = 360  # 480 URL-safe base64 characters: see issue_token
UPDATE_STATUSES = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED")  # UpdateJobExecution
PENDING = ("QUEUED", "IN_PROGRESS")
THING_RE = re.compile(r"[A-Za-z0-9:_-]{1,128}")  # AWS CreateThing thingName
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # AWS CreateJob jobId
MIN_PREFIX = 8  # hex digits of a certificate id that may stand for it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
  cert_id TEXT PRIMARY KEY, thing TEXT NOT NULL, status TEXT NOT NULL, serial TEXT NOT NULL,
  not_after INTEGER NOT NULL, created INTEGER NOT NULL, updated INTEGER NOT NULL,
  attached INTEGER NOT NULL DEFAULT 0, pem TEXT NOT NULL,
  token_hash TEXT UNIQUE, token_expires INTEGER);
CREATE INDEX IF NOT EXISTS certificates_thing ON certificates(thing);
CREATE INDEX IF NOT EXISTS certificates_pending ON certificates(status, token_expires);
CREATE TABLE IF NOT EXISTS things (
  name TEXT PRIMARY KEY, attributes TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL UNIQUE, thing TEXT NOT NULL,
  document TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL,
  status_details TEXT NOT NULL, queued_at INTEGER NOT NULL, started_at INTEGER,
  updated_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_thing ON jobs(thing, status);
CREATE TABLE IF NOT EXISTS deleted (
  serial TEXT PRIMARY KEY, deleted INTEGER NOT NULL);
"""
_CERT_COLS = "cert_id, thing, status, serial, not_after, created, updated, attached, pem"


class RegistryError(UpcertError):
    """A registry request that cannot be done (unknown id, forbidden status change, bad input)."""


class TokenError(RegistryError):
    """An ownership token that cannot be used; status_code/error_code as AWS's rejection."""

    def __init__(self, status_code, error_code, message):
        super().__init__(message)
        self.status_code, self.error_code = status_code, error_code


class JobError(RegistryError):
    """A refused job update; code is AWS's ErrorResponse code, state the execution state."""

    def __init__(self, code, message, state=None):
        super().__init__(message)
        self.code, self.state = code, state


def _hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def _now(now):
    return int(time.time() if now is None else now)


def _job(row):
    if row is None:
        return None
    job = dict(row)
    job["document"] = json.loads(job["document"])
    job["status_details"] = json.loads(job["status_details"])
    job["execution_number"] = job.pop("seq")
    return job


class Registry:
    """Certificates, things and jobs in the SQLite file at path (created on first use)."""

    def __init__(self, path):
        self.path = Path(path)
        self._local = threading.local()  # one connection per thread (and per process)

    def _connect(self):
        con = getattr(self._local, "con", None)
        if con is not None and self._local.pid == os.getpid():
            return con
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            if new:
                os.chmod(self.path, 0o600)  # the registry holds every thing's certificates
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            # a commit does not wait for the disk; the file stays consistent (a power cut may
            # lose the last commits, acceptable for a stand-in)
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise RegistryError(f"cannot open the registry {self.path}: {e}") from None
        # kept open: closing the last connection checkpoints and deletes the WAL each time
        self._local.con, self._local.pid = con, os.getpid()
        return con

    @contextmanager
    def _tx(self, write=False):
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield con
            con.execute("COMMIT")
        except sqlite3.Error as e:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise RegistryError(f"registry {self.path}: {e}") from None
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def close(self):
        """Close this thread's connection (another call opens a new one)."""
        con = getattr(self._local, "con", None)
        if con is not None and self._local.pid == os.getpid():
            con.close()
        self._local.con = None

    # certificates ---------------------------------------------------------------------------

    def register(self, cert, thing=None, status="ACTIVE", now=None):
        """Add a certificate (x509.Certificate, PEM or DER); thing defaults to its CN."""
        if not isinstance(cert, x509.Certificate):
            cert = load_certificate(cert)
        thing = thing or common_name(cert.subject)
        _check_thing(thing)
        _check_status(status)
        cid, t = _cert_id(cert), _now(now)
        pem = cert.public_bytes(Encoding.PEM).decode()
        with self._tx(write=True) as con:
            old = con.execute("SELECT status FROM certificates WHERE cert_id=?", (cid,)).fetchone()
            if old:
                raise RegistryError(f"certificate {cid[:12]} is already registered "
                                    f"({old['status']}): change its status instead")
            con.execute(f"INSERT INTO certificates ({_CERT_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
                        (cid, thing, status, f"{cert.serial_number:x}",
                         int(cert.not_valid_after_utc.timestamp()), t, t, 0, pem))
            _put_thing(con, thing, None, t)
        return self.get(cid)

    def get(self, cert_id):
        """The certificate record (dict) for an id or a unique id prefix, or None."""
        with self._tx() as con:
            cid = _resolve(con, cert_id, must_exist=False)
            row = cid and con.execute(f"SELECT {_CERT_COLS} FROM certificates WHERE cert_id=?",
                                      (cid,)).fetchone()
        return _cert(row) if row else None

    def list(self, thing=None):
        """Certificate records, oldest first; only those of thing when given."""
        sql, args = f"SELECT {_CERT_COLS} FROM certificates", ()
        if thing is not None:
            sql, args = sql + " WHERE thing=?", (thing,)
        with self._tx() as con:
            return [_cert(r) for r in con.execute(sql + " ORDER BY rowid", args)]

    def set_status(self, cert_id, status, now=None):
        """Change a certificate's status as AWS UpdateCertificate does; the new record."""
        _check_status(status)
        if status == "PENDING_ACTIVATION":
            raise RegistryError("PENDING_ACTIVATION is set by AWS IoT itself, not by an update: "
                                "use ACTIVE, INACTIVE or REVOKED")
        with self._tx(write=True) as con:
            cid = _resolve(con, cert_id)
            old = con.execute("SELECT status FROM certificates WHERE cert_id=?", (cid,)).fetchone()
            if old["status"] == "REVOKED" and status != "REVOKED":
                raise RegistryError(f"certificate {cid[:12]} is REVOKED, which is final (AWS "
                                    "refuses to reactivate a revoked certificate): issue a new one")
            con.execute("UPDATE certificates SET status=?, updated=? WHERE cert_id=?",
                        (status, _now(now), cid))
        return self.get(cid)

    def issue_token(self, cert_id, ttl_s=TOKEN_TTL_S, now=None):
        """A new random ownership token for the certificate (only its hash is stored). As long
        as AWS's (opaque, a few hundred characters: AWS's Embedded C SDK fleet provisioning demos
        hold one in OWNERSHIP_TOKEN_BUFFER_LENGTH, 512 bytes), so that a device's memory is
        measured with one of that length between CreateCertificateFromCsr and RegisterThing."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self._tx(write=True) as con:
            cid = _resolve(con, cert_id)
            con.execute("UPDATE certificates SET token_hash=?, token_expires=? WHERE cert_id=?",
                        (_hash(token), _now(now) + int(ttl_s), cid))
        return token

    def consume_token(self, token, thing, now=None):
        """Activate and attach the certificate of an ownership token (single use): its record."""
        if not isinstance(token, str) or not token:
            raise TokenError(400, "InvalidCertificateOwnershipToken",
                             "Certificate ownership token cannot be empty.")
        t = _now(now)
        with self._tx(write=True) as con:
            row = con.execute("SELECT cert_id, thing, token_expires FROM certificates "
                              "WHERE token_hash=?", (_hash(token),)).fetchone()
            if row is None:
                raise TokenError(400, "InvalidCertificateOwnershipToken",
                                 "Certificate ownership token is not valid.")
            if row["thing"] != thing:
                raise TokenError(403, "Forbidden", f"The certificate of this ownership token "
                                 f"belongs to another thing, not {thing}.")
            if row["token_expires"] < t:
                raise TokenError(400, "InvalidCertificateOwnershipToken",
                                 "Certificate ownership token has expired: create a new "
                                 "certificate with create-from-csr.")
            # a certificate set INACTIVE or REVOKED meanwhile stays so
            con.execute("UPDATE certificates SET attached=1, token_hash=NULL, token_expires=NULL,"
                        " updated=?, status=CASE status WHEN 'PENDING_ACTIVATION' THEN 'ACTIVE' "
                        "ELSE status END WHERE cert_id=?", (t, row["cert_id"]))
        return self.get(row["cert_id"])

    def expire_pending(self, now=None):
        """Delete every certificate still PENDING_ACTIVATION whose ownership token has expired
        (AWS deletes a certificate from CreateCertificateFromCsr that was not provisioned before
        its token expired): the deleted records, which leave the CRL with them."""
        t = _now(now)
        with self._tx(write=True) as con:
            rows = con.execute(f"SELECT {_CERT_COLS} FROM certificates WHERE status="
                               "'PENDING_ACTIVATION' AND token_expires < ?", (t,)).fetchall()
            con.execute("DELETE FROM certificates WHERE status='PENDING_ACTIVATION' AND "
                        "token_expires < ?", (t,))
            # AWS accepts registered certificates only; this stand-in refuses by CRL (a
            # deny-list), so a deleted certificate's serial stays in the CRL: deleted must not
            # mean usable. Throttled issuing bounds how many there can be.
            con.executemany("INSERT OR IGNORE INTO deleted (serial, deleted) VALUES (?, ?)",
                            [(r["serial"], t) for r in rows])
        return [_cert(r) for r in rows]

    def revocations(self):
        """(serial as int, status, changed at) of every certificate that is not ACTIVE, and of
        every one deleted (status DELETED: it must stay refused)."""
        with self._tx() as con:
            rows = con.execute("SELECT serial, status, updated FROM certificates "
                               "WHERE status != 'ACTIVE' UNION ALL SELECT serial, 'DELETED', "
                               "deleted FROM deleted ORDER BY 3").fetchall()
        return [(int(r[0], 16), r[1], r[2]) for r in rows]

    # things ---------------------------------------------------------------------------------

    def put_thing(self, name, attributes=None, now=None):
        """Create a thing, or replace its attributes (dict of str to str) when given."""
        _check_thing(name)
        with self._tx(write=True) as con:
            _put_thing(con, name, attributes, _now(now))

    def get_thing(self, name):
        """{"name", "attributes", "created"} or None."""
        with self._tx() as con:
            row = con.execute("SELECT * FROM things WHERE name=?", (name,)).fetchone()
        return dict(row, attributes=json.loads(row["attributes"])) if row else None

    # jobs -----------------------------------------------------------------------------------

    def create_job(self, thing, document, job_id=None, now=None):
        """Queue a job execution for thing; the job id (generated unless given)."""
        _check_thing(thing)
        if not isinstance(document, dict):
            raise RegistryError(f"a job document is a JSON object, not {type(document).__name__}")
        job_id = job_id or f"{thing.replace(':', '-')[:40]}-{secrets.token_hex(6)}"
        if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
            raise RegistryError(f"job id {job_id!r} is not valid: use 1-64 letters, digits, "
                                "'_' or '-' (AWS CreateJob)")
        t = _now(now)
        with self._tx(write=True) as con:
            if con.execute("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)).fetchone():
                raise RegistryError(f"job {job_id} exists already: pick another id")
            con.execute("INSERT INTO jobs (job_id, thing, document, status, version, "
                        "status_details, queued_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                        (job_id, thing, json.dumps(document), "QUEUED", 1, "{}", t, t))
            _put_thing(con, thing, None, t)
        return job_id

    def get_job(self, job_id):
        """The job execution record (dict) or None."""
        with self._tx() as con:
            return _job(con.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone())

    def list_jobs(self, thing=None):
        """Job execution records in creation order; only thing's when given."""
        sql, args = "SELECT * FROM jobs", ()
        if thing is not None:
            sql, args = sql + " WHERE thing=?", (thing,)
        with self._tx() as con:
            return [_job(r) for r in con.execute(sql + " ORDER BY seq", args)]

    def next_job(self, thing):
        """The thing's next pending job (IN_PROGRESS first, then QUEUED, oldest first) or None."""
        return self.next_jobs().get(thing)

    def next_jobs(self):
        """{thing: its next pending job}: IN_PROGRESS first, then QUEUED, oldest first (AWS)."""
        with self._tx() as con:
            rows = con.execute("SELECT * FROM jobs WHERE status IN ('QUEUED', 'IN_PROGRESS') "
                               "ORDER BY status='QUEUED', seq").fetchall()
        nxt = {}
        for r in rows:
            nxt.setdefault(r["thing"], _job(r))
        return nxt

    def start_next(self, thing, status_details=None, now=None):
        """StartNextPendingJobExecution: the next pending job, moved to IN_PROGRESS; or None."""
        with self._tx(write=True) as con:
            row = con.execute("SELECT * FROM jobs WHERE thing=? AND status IN ('QUEUED', "
                              "'IN_PROGRESS') ORDER BY status='QUEUED', seq LIMIT 1",
                              (thing,)).fetchone()
            if row is None:
                return None
            if row["status"] == "QUEUED":
                details = row["status_details"] if status_details is None else json.dumps(
                    status_details)
                t = _now(now)
                con.execute("UPDATE jobs SET status='IN_PROGRESS', version=version+1, "
                            "status_details=?, started_at=?, updated_at=? WHERE seq=?",
                            (details, t, t, row["seq"]))
            return _job(con.execute("SELECT * FROM jobs WHERE seq=?", (row["seq"],)).fetchone())

    def update_job(self, job_id, status, status_details=None, expected_version=None,
                   thing=None, now=None):
        """UpdateJobExecution; the new record, or JobError with AWS's code."""
        with self._tx(write=True) as con:
            row = con.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if row is None or (thing is not None and row["thing"] != thing):
                raise JobError("ResourceNotFound", f"Job execution {job_id} not found.")
            state = {"status": row["status"], "statusDetails": json.loads(row["status_details"]),
                     "versionNumber": row["version"]}
            if status not in UPDATE_STATUSES:
                raise JobError("InvalidRequest", f"status {status!r} is not one of "
                               f"{', '.join(UPDATE_STATUSES)}.")
            if expected_version is not None and expected_version != row["version"]:
                raise JobError("VersionMismatch", f"expectedVersion {expected_version} is not "
                               f"the current version {row['version']}.", state)
            if row["status"] not in PENDING:
                raise JobError("InvalidStateTransition", f"Job execution {job_id} is "
                               f"{row['status']}, a terminal status.", state)
            details = row["status_details"] if status_details is None else json.dumps(
                status_details)
            t = _now(now)
            con.execute("UPDATE jobs SET status=?, version=version+1, status_details=?, "
                        "updated_at=?, started_at=COALESCE(started_at, ?) WHERE seq=?",
                        (status, details, t, t, row["seq"]))
            return _job(con.execute("SELECT * FROM jobs WHERE seq=?", (row["seq"],)).fetchone())


def _cert(row):
    return dict(row, attached=bool(row["attached"]))


def _resolve(con, cert_id, must_exist=True):
    """The full id for a certificate id or a unique prefix of at least MIN_PREFIX digits."""
    cid = str(cert_id).strip().lower()
    if not re.fullmatch(f"[0-9a-f]{{{MIN_PREFIX},64}}", cid):
        raise RegistryError(f"{cert_id!r} is not a certificate id: give its 64 hex digits "
                            f"(or at least the first {MIN_PREFIX})")
    rows = con.execute("SELECT cert_id FROM certificates WHERE cert_id >= ? AND cert_id < ? "
                       "LIMIT 2", (cid, cid + "g")).fetchall()
    if len(rows) > 1:
        raise RegistryError(f"certificate id prefix {cid} is ambiguous: give more digits")
    if not rows:
        if must_exist:
            raise RegistryError(f"no certificate {cid} in the registry: list them with "
                                "`upcert certs list`")
        return None
    return rows[0]["cert_id"]


def _put_thing(con, name, attributes, t):
    con.execute("INSERT OR IGNORE INTO things (name, attributes, created) VALUES (?, '{}', ?)",
                (name, t))
    if attributes is not None:
        if not isinstance(attributes, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
            raise RegistryError("thing attributes are a dict of strings to strings")
        con.execute("UPDATE things SET attributes=? WHERE name=?", (json.dumps(attributes), name))


def _check_thing(thing):
    if not isinstance(thing, str) or not THING_RE.fullmatch(thing):
        raise RegistryError(f"thing name {thing!r} is not valid: use 1-128 letters, digits, ':', "
                            "'_' or '-' (AWS IoT thing name rules)")


def _check_status(status):
    if status not in STATUSES:
        raise RegistryError(f"certificate status {status!r} is not one of {', '.join(STATUSES)}")
