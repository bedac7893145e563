"""Tests for upcert.cloud.registry: certificates, ownership tokens, things and job executions in one
SQLite file, and its use by several processes at once (WAL, short transactions).
"""

import multiprocessing
import time

import pytest
from upcert.cloud import registry as registry_mod
from upcert.cloud.registry import JobError, Registry, RegistryError, TokenError
from upcert.pki.ca import LocalCa
from upcert.pki.certs import cert_id, generate_key


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return LocalCa.init(tmp_path_factory.mktemp("ca"), key_type="ec")


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path / "state" / "registry.sqlite3")


def device_cert(ca, thing):
    return ca.issue_device(thing, generate_key().public_key())


# --- certificates ---------------------------------------------------------------------------


def test_register_get_list(ca, reg):
    a, b = device_cert(ca, "dev1"), device_cert(ca, "dev2")
    rec = reg.register(a)
    assert rec["cert_id"] == cert_id(a) and rec["thing"] == "dev1"  # thing from the CN
    assert rec["status"] == "ACTIVE" and not rec["attached"]
    assert int(rec["serial"], 16) == a.serial_number
    assert rec["not_after"] == int(a.not_valid_after_utc.timestamp())
    reg.register(b, status="INACTIVE")
    assert reg.get(rec["cert_id"][:10])["pem"].startswith("-----BEGIN CERTIFICATE")
    assert [r["thing"] for r in reg.list()] == ["dev1", "dev2"]
    assert [r["status"] for r in reg.list(thing="dev2")] == ["INACTIVE"]
    assert reg.get("0" * 64) is None
    assert reg.get_thing("dev1")["attributes"] == {}


def test_register_refuses_duplicates_and_bad_input(ca, reg):
    a = device_cert(ca, "dev1")
    reg.register(a)
    with pytest.raises(RegistryError, match="already registered .ACTIVE.: change its status"):
        reg.register(a)
    with pytest.raises(RegistryError, match="status 'GOOD' is not one of ACTIVE"):
        reg.register(device_cert(ca, "dev1"), status="GOOD")
    with pytest.raises(RegistryError, match="thing name 'a/b' is not valid"):
        reg.register(device_cert(ca, "dev1"), thing="a/b")


def test_ids_and_prefixes_are_explained(ca, reg, monkeypatch):
    reg.register(device_cert(ca, "dev1"))
    with pytest.raises(RegistryError, match="not a certificate id: give its 64 hex digits"):
        reg.set_status("xyz", "INACTIVE")
    with pytest.raises(RegistryError, match="no certificate 00000000 in the registry"):
        reg.set_status("00000000", "INACTIVE")
    ids = [reg.register(device_cert(ca, "dev1"))["cert_id"] for _ in range(20)]
    monkeypatch.setattr(registry_mod, "MIN_PREFIX", 1)  # 21 ids in 16 first digits: a clash
    first = [i[0] for i in ids]
    shared = next(d for d in first if first.count(d) > 1)
    with pytest.raises(RegistryError, match=f"prefix {shared} is ambiguous: give more digits"):
        reg.get(shared)
    assert reg.get(ids[0].upper())["cert_id"] == ids[0]


def test_status_changes_follow_aws(ca, reg):
    cid = reg.register(device_cert(ca, "dev1"))["cert_id"]
    assert reg.set_status(cid, "INACTIVE")["status"] == "INACTIVE"
    assert reg.set_status(cid, "ACTIVE")["status"] == "ACTIVE"
    with pytest.raises(RegistryError, match="PENDING_ACTIVATION is set by AWS IoT itself"):
        reg.set_status(cid, "PENDING_ACTIVATION")
    assert reg.set_status(cid, "REVOKED")["status"] == "REVOKED"
    with pytest.raises(RegistryError, match="REVOKED, which is final"):
        reg.set_status(cid, "ACTIVE")
    assert reg.get(cid)["status"] == "REVOKED"


def test_revocations_list_every_non_active_serial(ca, reg):
    certs = {s: device_cert(ca, "dev1") for s in ("ACTIVE", "INACTIVE", "REVOKED",
                                                  "PENDING_ACTIVATION")}
    for status, cert in certs.items():
        reg.register(cert, status=status)
    got = {serial: status for serial, status, _ in reg.revocations()}
    assert got == {certs[s].serial_number: s for s in ("INACTIVE", "REVOKED",
                                                       "PENDING_ACTIVATION")}


# --- ownership tokens -----------------------------------------------------------------------


def test_token_activates_and_attaches_once(ca, reg):
    cid = reg.register(device_cert(ca, "dev1"), status="PENDING_ACTIVATION")["cert_id"]
    token = reg.issue_token(cid)
    assert len(token) >= 40 and token not in str(reg.get(cid))  # only a hash is stored
    rec = reg.consume_token(token, "dev1")
    assert rec["status"] == "ACTIVE" and rec["attached"]
    with pytest.raises(TokenError, match="not valid") as e:
        reg.consume_token(token, "dev1")  # single use
    assert (e.value.status_code, e.value.error_code) == (400, "InvalidCertificateOwnershipToken")


def test_token_refusals(ca, reg):
    cid = reg.register(device_cert(ca, "dev1"), status="PENDING_ACTIVATION")["cert_id"]
    for bad in ("", None, 5):
        with pytest.raises(TokenError, match="cannot be empty"):
            reg.consume_token(bad, "dev1")
    token = reg.issue_token(cid)
    with pytest.raises(TokenError, match="belongs to another thing") as e:
        reg.consume_token(token, "dev2")
    assert e.value.status_code == 403 and e.value.error_code == "Forbidden"
    expired = reg.issue_token(cid, now=time.time() - 3601)  # AWS: valid for 1 h
    with pytest.raises(TokenError, match="has expired"):
        reg.consume_token(expired, "dev1")
    assert reg.get(cid)["status"] == "PENDING_ACTIVATION"


def test_token_keeps_a_status_set_meanwhile(ca, reg):
    cid = reg.register(device_cert(ca, "dev1"), status="PENDING_ACTIVATION")["cert_id"]
    token = reg.issue_token(cid)
    reg.set_status(cid, "REVOKED")
    assert reg.consume_token(token, "dev1")["status"] == "REVOKED"


# --- jobs -----------------------------------------------------------------------------------


def test_jobs_queue_start_update(reg):
    j1 = reg.create_job("dev1", {"operation": "rotate-certificate"}, job_id="j1", now=100)
    j2 = reg.create_job("dev1", {"n": 2}, now=101)
    reg.create_job("dev2", {"n": 3}, job_id="other")
    assert j1 == "j1" and j2.startswith("dev1-")
    assert reg.next_job("dev1")["job_id"] == "j1"
    started = reg.start_next("dev1", {"step": "csr"}, now=110)
    assert (started["job_id"], started["status"], started["version"]) == ("j1", "IN_PROGRESS", 2)
    assert started["started_at"] == 110 and started["status_details"] == {"step": "csr"}
    assert reg.start_next("dev1")["version"] == 2  # IN_PROGRESS comes back unchanged
    done = reg.update_job("j1", "SUCCEEDED", expected_version=2, now=120)
    assert (done["status"], done["version"], done["status_details"]) == ("SUCCEEDED", 3,
                                                                         {"step": "csr"})
    assert reg.next_job("dev1")["job_id"] == j2
    assert set(reg.next_jobs()) == {"dev1", "dev2"}
    assert [j["job_id"] for j in reg.list_jobs("dev1")] == ["j1", j2]
    assert reg.get_job("j1")["document"] == {"operation": "rotate-certificate"}


def test_job_refusals_carry_aws_codes(reg):
    reg.create_job("dev1", {}, job_id="j1")
    cases = [(("nope", "SUCCEEDED"), {}, "ResourceNotFound"),
             (("j1", "SUCCEEDED"), {"thing": "dev2"}, "ResourceNotFound"),
             (("j1", "DONE"), {}, "InvalidRequest"),
             (("j1", "IN_PROGRESS"), {"expected_version": 7}, "VersionMismatch")]
    for args, kwargs, code in cases:
        with pytest.raises(JobError) as e:
            reg.update_job(*args, **kwargs)
        assert e.value.code == code
    assert e.value.state == {"status": "QUEUED", "statusDetails": {}, "versionNumber": 1}
    reg.update_job("j1", "FAILED")
    with pytest.raises(JobError, match="terminal") as e:
        reg.update_job("j1", "IN_PROGRESS")
    assert e.value.code == "InvalidStateTransition" and e.value.state["status"] == "FAILED"
    with pytest.raises(RegistryError, match="exists already"):
        reg.create_job("dev1", {}, job_id="j1")
    with pytest.raises(RegistryError, match="job id 'a/b' is not valid"):
        reg.create_job("dev1", {}, job_id="a/b")
    with pytest.raises(RegistryError, match="a job document is a JSON object"):
        reg.create_job("dev1", ["x"])


def test_unusable_path_is_explained(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match="cannot open the registry"):
        Registry(tmp_path / "file" / "registry.sqlite3").list()


# --- several processes at once ---------------------------------------------------------------


def _worker(path, pems, barrier, results):
    reg = Registry(path)
    barrier.wait()
    for pem in pems:
        reg.register(pem)
        reg.list()  # a reader among the writers
    try:
        reg.update_job("race", "IN_PROGRESS", expected_version=1)
        results.put("won")
    except JobError as e:
        results.put(e.code)


def test_processes_share_the_registry(ca, tmp_path):
    path = tmp_path / "registry.sqlite3"
    reg = Registry(path)
    reg.create_job("dev1", {}, job_id="race")
    from cryptography.hazmat.primitives.serialization import Encoding

    pems = [device_cert(ca, f"dev{i % 7}").public_bytes(Encoding.PEM) for i in range(120)]
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, pems[i::4], barrier, results))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["VersionMismatch"] * 3 + ["won"]  # expectedVersion: one winner
    assert len(reg.list()) == 120
    assert reg.get_job("race")["version"] == 2
