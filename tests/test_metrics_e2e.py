"""Metrics against a real lab: live tun and tap sessions, traffic, refusals.

``tunhelper leases --format prometheus`` is run where the helpers run (the server's
namespace), parsed with prometheus_client's parser, and must move when traffic flows
and when the forced command refuses a session.
"""

from __future__ import annotations

import subprocess

from tests.lab import run, tunhelper_command
from tests.test_e2e import assert_nothing_left, connected
from tests.test_metrics import samples, value

GATEWAY = "192.168.3.1"
POOL = "192.168.3.0/24"


def scrape(lab) -> dict:
    text = run(
        tunhelper_command(),
        "leases",
        "--format",
        "prometheus",
        "--state-dir",
        lab.state_dir,
        ns=lab.server_ns,
    ).stdout
    return samples(text)


def test_counters_move_with_traffic_on_tun_and_tap_and_refusals_are_counted(make_lab) -> None:
    lab = make_lab(["--pool", POOL, "--wait", "0.5"])
    tun = connected(lab.add_client())
    tap_client = lab.add_client()
    tap = tap_client.connect("-o", "Tunnel=ethernet")
    tap_address = tap.read_address()
    assert tap_address is not None, tap.stderr()
    (tap_device,) = tap_client.tun_devices("tap")
    run("ip", "addr", "add", f"{tap_address}/24", "dev", tap_device, ns=tap_client.ns)
    run("ip", "link", "set", tap_device, "up", ns=tap_client.ns)

    before = scrape(lab)
    assert value(before, "tunhelper_leases", pool=POOL, state="active") == 2
    assert value(before, "tunhelper_pool_free", pool=POOL) == 253 - 2
    sessions = {}
    for address in (tun.address, tap_address):
        labels = {"address": address}
        device = [
            dict(ls)["device"]
            for (n, ls) in before
            if n == "tunhelper_session_receive_bytes_total" and dict(ls)["address"] == address
        ]
        assert len(device) == 1, before
        sessions[address] = device[0]
        assert value(before, "tunhelper_session_start_time_seconds", **labels) > 1.7e9
    assert sessions[tun.address].startswith("tun") and sessions[tap_address].startswith("tap")

    # 10 pings of 1,000 bytes each way, on each session
    for session in (tun, tap):
        result = run(
            "ping", "-q", "-c", "10", "-i", "0.05", "-s", "1000", "-W", "2", GATEWAY,
            ns=session.client.ns, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout
    after = scrape(lab)
    for address in (tun.address, tap_address):
        labels = {"address": address, "device": sessions[address]}
        for name, least in (("receive_bytes", 10_000), ("transmit_bytes", 10_000),
                            ("receive_packets", 10), ("transmit_packets", 10)):  # fmt: skip
            metric = f"tunhelper_session_{name}_total"
            moved = value(after, metric, **labels) - value(before, metric, **labels)
            assert moved >= least, (address, name, moved)

    # a refusal: no tunnel (ssh without -w)
    assert value(after, "tunhelper_refusals_total", reason="no_device") == 0
    argv = [a for a in lab.add_client().ssh_argv() if a not in ("-w", "any")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "no tunnel device" in result.stderr
    refused = scrape(lab)
    assert value(refused, "tunhelper_refusals_total", reason="no_device") == 1
    assert value(refused, "tunhelper_refusals_total", reason="pool_exhausted") == 0

    tun.close()
    tap.close()
    assert_nothing_left(lab)
    gone = scrape(lab)
    assert value(gone, "tunhelper_leases", pool=POOL, state="active") == 0
    assert not [k for k in gone if k[0].startswith("tunhelper_session_")]
