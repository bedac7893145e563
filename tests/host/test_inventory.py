"""The inventory's guarantees come from the database's constraints: on SQLite and on a real
PostgreSQL server (Debian's, started here), a thing, a certificate or a chip is given to one
board only, and two stations racing for one thing name end with exactly one winner."""

import threading

import pytest
from upcert.factory.inventory import Taken, open_inventory

from tests import pgserver
from tests.tools import missing


@pytest.fixture(scope="module")
def pg_url():
    if pgserver.binaries() is None:
        missing("PostgreSQL not installed (initdb, pg_ctl): apt-get install postgresql, "
                "or run `make setup`")
    with pgserver.server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    if request.param == "sqlite":
        return tmp_path / "inv.sqlite"
    url = request.getfixturevalue("pg_url")
    inv = open_inventory(url)
    inv._run("DROP TABLE boards", ())  # a fresh table for each test
    inv.close()
    return url


def test_constraints_refuse_a_thing_certificate_or_chip_twice(where):
    inv = open_inventory(where)
    row = inv.reserve("t1", "fs", "/dev/x", "st-a", "{}", "chip1")
    assert row["state"] == "reserved" and row["station"] == "st-a"
    with pytest.raises(Taken, match="being made by station st-a"):
        inv.reserve("t1", "nvs", "/dev/y", "st-b")
    assert inv.reserve("t1", "fs", "/dev/x", "st-a")["state"] == "reserved"  # its own: resume
    with pytest.raises(Taken, match="refused it"):
        inv.reserve("t2", "fs", "/dev/y", "st-a", "{}", "chip1")  # chip of t1
    inv.reserve("t2", "fs", "/dev/y", "st-a")
    inv.issued("t1", "c" * 64, "f1", "2027-01-01T00:00:00+00:00")
    with pytest.raises(Taken, match="another board already has it"):
        inv.issued("t2", "c" * 64, "f2", "2027-01-01T00:00:00+00:00")
    with pytest.raises(Taken):
        inv.issued("t2", "d" * 64, "f1", "2027-01-01T00:00:00+00:00")  # same fingerprint
    inv.done("t1", firmware="MicroPython-1.29.0/esp32")
    assert inv.reserve("t1", "fs", "/dev/x", "st-b")["state"] == "done"  # done: any station
    inv.rolled_back("t2")
    assert inv.get("t2")["cert_id"] is None
    assert [r["thing"] for r in inv.rows()] == ["t1", "t2"]
    inv.close()


def test_two_stations_race_for_one_thing_exactly_one_wins(where):
    names = [f"race-{i}" for i in range(20)]
    wins = {n: [] for n in names}
    errors = []
    barrier = threading.Barrier(2)

    def station(name):
        inv = open_inventory(where)
        for n in names:
            barrier.wait()
            try:
                row = inv.reserve(n, "fs", f"/dev/{name}", name)
                if row["station"] == name:
                    wins[n].append(name)
            except Taken:
                pass
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)
        inv.close()

    threads = [threading.Thread(target=station, args=(s,)) for s in ("st-a", "st-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(len(w) == 1 for w in wins.values()), wins
    inv = open_inventory(where)
    assert len(inv.rows()) == 20
    inv.close()


def test_two_stations_opening_a_new_sqlite_file_at_once_both_get_it(tmp_path):
    # Switching a new file to WAL: SQLite refuses one of two racers at once ("database is
    # locked"), without its busy timeout; open_inventory must wait its turn (measured: 32 of 200
    # such races failed before it did).
    errors = []
    for i in range(60):
        path = tmp_path / f"inv{i}.sqlite"
        barrier = threading.Barrier(2)

        def station(path=path, barrier=barrier):
            barrier.wait()
            try:
                inv = open_inventory(path)
                inv.rows()
                inv.close()
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=station) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]


def test_postgresql_url_without_password_in_messages(pg_url):
    inv = open_inventory(pg_url.replace("upcert@", "upcert:s3cret@"))
    assert "s3cret" not in inv.where and inv.where.startswith("postgresql://upcert@")
    inv.close()
    with pytest.raises(Exception, match="cannot connect") as e:
        open_inventory("postgresql://nobody:pw@127.0.0.1:1/x")
    assert "pw@" not in str(e.value)
