"""Metrics with no daemon (``tunhelper leases --format prometheus``), the refusal counter
the forced command keeps in the state directory, and the lease table at a glance.

The exposition text is checked by parsing it with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.lab import run, tunhelper_command
from tunhelper.admin import metrics, table
from tunhelper.errors import TunhelperError, UsageError
from tunhelper.link.discover import NoDevice
from tunhelper.pool import Pool
from tunhelper.store import Owner, PoolExhausted, Request, liveness, open_store


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` as prometheus_client reads the text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, key
            out[key] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    hits = [v for (n, ls), v in found.items() if n == name and wanted <= set(ls)]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


# -- the refusal counter ------------------------------------------------------------------


def test_reasons_by_class_then_by_words() -> None:
    assert metrics.reason_of(NoDevice("no tunnel device")) == "no_device"
    assert metrics.reason_of(PoolExhausted("pool 10.0.0.0/30 is exhausted")) == "pool_exhausted"
    assert metrics.reason_of(UsageError("--pool x")) == "usage"
    assert metrics.reason_of(TunhelperError("... (--max-leases 2): end one first")) == "max_leases"
    assert metrics.reason_of(TunhelperError("cannot write lease database x")) == "database"
    assert metrics.reason_of(TunhelperError("anything else")) == "other"


def _hammer(state_dir: str, n: int) -> None:
    for _ in range(n):
        metrics.count_refusal(state_dir, NoDevice("x"))


def test_concurrent_helpers_never_lose_a_count(tmp_path: Path) -> None:
    state = str(tmp_path / "state")  # not there yet: the first refusal makes it, 0700
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_hammer, args=(state, 50)) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    metrics.count_refusal(state, PoolExhausted("full"))
    counts = metrics.read_refusals(state)
    assert counts["no_device"] == 400 and counts["pool_exhausted"] == 1
    assert set(counts) == set(metrics.REASONS) and counts["other"] == 0
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(state, metrics.REFUSALS_FILE)).st_mode) == 0o600


def test_counter_is_bounded_and_survives_damage(tmp_path: Path) -> None:
    path = tmp_path / metrics.REFUSALS_FILE
    path.write_text(json.dumps({"no_device": 5, "made_up": 10**6, "usage": -3, "other": "x"}))
    metrics.count_refusal(str(tmp_path), NoDevice("x"))
    assert json.loads(path.read_text()) == {"no_device": 6}  # unknown names dropped
    path.write_bytes(b"\x00garbage{")  # a power cut mid-write
    metrics.count_refusal(str(tmp_path), NoDevice("x"))
    assert metrics.read_refusals(str(tmp_path))["no_device"] == 1
    os.unlink(path)
    os.symlink(tmp_path / "elsewhere", path)  # never followed
    metrics.count_refusal(str(tmp_path), NoDevice("x"))  # loses the count, raises nothing
    assert not (tmp_path / "elsewhere").exists()
    metrics.count_refusal(str(tmp_path / "no" / "such"), NoDevice("x"))  # nothing raised
    metrics.count_refusal(None, NoDevice("x"))


# -- the exposition format ------------------------------------------------------------------


def row(address: str, state: str, **kw) -> dict:
    base = {
        "address": address,
        "pool": "10.7.0.0/29",
        "client": "SHA256:abc",
        "device": "tun0",
        "state": state,
        "since_unix": 1_700_000_000.5,
        "pid": 10,
        "bytes_in": None,
        "bytes_out": None,
        "packets_in": None,
        "packets_out": None,
    }
    return {**base, **kw}


def test_rendered_text_parses_and_says_what_the_rows_say() -> None:
    rows = [
        row("10.7.0.2", "active", device="tun3", bytes_in=1000, bytes_out=2000,
            packets_in=10, packets_out=20, client='odd "name"\\ \nx'),
        row("10.7.0.3", "active", device="tap1", bytes_in=5, bytes_out=6,
            packets_in=1, packets_out=2),
        row("10.7.0.4", "active"),  # another host's live session: no counters here
        row("10.7.0.5", "stale"),
        row("10.7.0.6", "released"),
        row("fd00:3::2", "released", pool="fd00:3::/112"),
    ]  # fmt: skip
    text = metrics.render(rows, {"no_device": 3, "pool_exhausted": 1})
    found = samples(text)
    pool = "10.7.0.0/29"
    assert value(found, "tunhelper_leases", pool=pool, state="active") == 3
    assert value(found, "tunhelper_leases", pool=pool, state="stale") == 1
    assert value(found, "tunhelper_leases", pool=pool, state="released") == 1
    assert value(found, "tunhelper_pool_size", pool=pool) == 5  # 6 hosts, the gateway
    assert value(found, "tunhelper_pool_free", pool=pool) == 2
    assert value(found, "tunhelper_pool_size", pool="fd00:3::/112") == 65535 - 1
    one = {"address": "10.7.0.2", "device": "tun3", "client": 'odd "name"\\ \nx'}
    assert value(found, "tunhelper_session_receive_bytes_total", **one) == 1000
    assert value(found, "tunhelper_session_transmit_bytes_total", **one) == 2000
    assert value(found, "tunhelper_session_receive_packets_total", **one) == 10
    assert value(found, "tunhelper_session_transmit_packets_total", **one) == 20
    assert value(found, "tunhelper_session_start_time_seconds", **one) == 1_700_000_000.5
    assert value(found, "tunhelper_session_transmit_bytes_total", device="tap1") == 6
    sessions = [k for k in found if k[0] == "tunhelper_session_receive_bytes_total"]
    assert len(sessions) == 2  # only live sessions with counters on this host
    assert value(found, "tunhelper_refusals_total", reason="no_device") == 3
    assert value(found, "tunhelper_refusals_total", reason="usage") == 0
    refusals = [k for k in found if k[0] == "tunhelper_refusals_total"]
    assert len(refusals) == len(metrics.REASONS)


def test_written_atomically_for_the_textfile_collector(tmp_path: Path) -> None:
    out = tmp_path / "tunhelper.prom"
    metrics.write_atomically(str(out), "a 1\n")
    metrics.write_atomically(str(out), "a 2\n")
    assert out.read_text() == "a 2\n" and stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tunhelper.prom"]
    with pytest.raises(TunhelperError, match="cannot write"):
        metrics.write_atomically(str(tmp_path / "none" / "x.prom"), "a 1\n")


# -- a generated store of 1,000 leases, through the real command -----------------------


def fill(state: Path, n: int) -> None:
    """``n`` leases in two pools, one in ten released, the rest stale (another boot)."""
    store = open_store(str(state))
    # this host, another boot: every lease of it is stale, as after a reboot
    here = Owner(liveness.this_host(), "other-boot", 1, 1.0, 1, 1.0, "tun0")
    try:
        pools = [Pool.parse("10.64.0.0/20"), Pool.parse("10.80.0.0/22")]
        for i in range(n):
            pool = pools[i % 2]
            request = Request(
                pool.name, pool.first, pool.last, set(), f"client-{i:04d}", here, pool.address
            )
            lease = store.allocate(request, lambda _: True)
            if i % 20 in (9, 18):  # 50 of each pool
                store.release(lease)
    finally:
        store.close()


def leases_cmd(state: Path, *args: str) -> subprocess.CompletedProcess:
    return run(tunhelper_command(), "leases", "--state-dir", str(state), *args)


@pytest.fixture(scope="module")
def thousand(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("needs root (the lease store's directory checks)")
    state = tmp_path_factory.mktemp("thousand") / "state"
    fill(state, 1000)
    return state


def test_table_of_a_thousand_leases_is_sorted_aligned_and_filterable(thousand: Path) -> None:
    lines = leases_cmd(thousand).stdout.splitlines()
    assert lines[0] == "pool 10.64.0.0/20: 0 active, 450 stale, 50 released"
    assert lines[1].split() == list(table.COLUMNS)
    body = lines[2:502]
    assert len(body) == 500 and lines[502] == ""
    assert lines[503] == "pool 10.80.0.0/22: 0 active, 450 stale, 50 released"
    assert max(len(x) for x in lines) <= 100  # one terminal line each
    widths = {x.index("stale") for x in body if " stale " in x}
    assert len(widths) == 1  # the state column lines up
    states = [x.split()[1] for x in body]
    assert states == ["stale"] * 450 + ["released"] * 50  # live first, then free
    addresses = [tuple(int(p) for p in x.split()[0].split(".")) for x in body[:450]]
    assert addresses == sorted(addresses)
    # filters
    one = leases_cmd(thousand, "--client", "client-0042").stdout.splitlines()
    assert len(one) == 3 and one[2].split()[-1] == "client-0042"
    pool = leases_cmd(thousand, "--pool", "10.80.0.0/22", "--format", "json").stdout
    assert {x["pool"] for x in json.loads(pool)} == {"10.80.0.0/22"}
    assert len(json.loads(pool)) == 500
    assert json.loads(leases_cmd(thousand, "--json", "--client", "nobody").stdout) == []


def test_a_fleets_table_names_the_gateway_of_each_lease() -> None:
    rows = [row("10.7.0.2", "active", host="gw1"), row("10.7.0.3", "active", host="gw2")]
    lines = table.render(rows, 1_700_000_060.0).splitlines()
    assert lines[1].split() == list(table.FLEET_COLUMNS)
    assert [x.split()[:3] for x in lines[2:]] == [
        ["10.7.0.2", "active", "gw1"],
        ["10.7.0.3", "active", "gw2"],
    ]
    one = table.render([row("10.7.0.2", "active", host="gw1")], 1_700_000_060.0)
    assert one.splitlines()[1].split() == list(table.COLUMNS)  # one gateway: as before


def test_prometheus_output_of_a_thousand_leases(thousand: Path, tmp_path: Path) -> None:
    out = tmp_path / "tunhelper.prom"
    leases_cmd(thousand, "--format", "prometheus", "--output", str(out))
    found = samples(out.read_text())
    assert value(found, "tunhelper_leases", pool="10.64.0.0/20", state="stale") == 450
    assert value(found, "tunhelper_pool_size", pool="10.64.0.0/20") == 4093
    assert value(found, "tunhelper_pool_free", pool="10.80.0.0/22") == 1021
    assert value(found, "tunhelper_refusals_total", reason="no_device") == 0
