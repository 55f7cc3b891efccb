"""Per-client policy on the authorized_keys line, end to end with a real sshd."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.lab import Lab, run, wait_until

GATEWAY = "192.168.3.1"
POOL = ["--pool", "192.168.3.0/24"]


def routes(ns: str, network: str) -> list[dict]:
    return json.loads(run("ip", "-j", "route", "show", network, ns=ns).stdout)


def connect_json(client, *args: str) -> dict:
    conn = client.tunhelper_connect("--json", *args)
    status = json.loads(conn.status() or "{}")
    assert status, conn.stderr()
    status["connect"] = conn
    return status


def test_connect_installs_the_announced_routes_and_removes_them(make_lab) -> None:
    lab = make_lab([*POOL, "--route", "10.77.0.0/16", "--route", "10.78.1.0/24"])
    client = lab.add_client()
    status = connect_json(client)
    assert status["routes"] == ["10.77.0.0/16", "10.78.1.0/24"]
    (route,) = routes(client.ns, "10.77.0.0/16")
    assert route["dev"] == status["device"]
    assert routes(client.ns, "10.78.1.0/24")[0]["dev"] == status["device"]
    assert status["connect"].interrupt() == 0
    assert routes(client.ns, "10.77.0.0/16") == []


def test_client_network_is_routed_while_the_session_lives(make_lab) -> None:
    lab = make_lab()
    site = lab.add_client("site", helper_args=[*POOL, "--client-net", "10.88.0.0/24"])
    run("ip", "addr", "add", "10.88.0.1/32", "dev", "lo", ns=site.ns)  # a host behind the client
    status = connect_json(site)
    (route,) = routes(lab.server_ns, "10.88.0.0/24")
    assert route["dev"] == lab.server_tun_devices()[0]
    assert lab.ping_from_server("10.88.0.1")

    other = lab.add_client("other", helper_args=[*POOL, "--client-net", "10.88.0.0/25"])
    refused = other.tunhelper_connect()
    assert refused.status() is None and refused.wait(15) == 1
    assert "--client-net 10.88.0.0/25 overlaps 10.88.0.0/24" in refused.stderr()

    assert status["connect"].interrupt() == 0
    assert wait_until(lambda: routes(lab.server_ns, "10.88.0.0/24") == [], 5)
    assert not lab.ping_from_server("10.88.0.1")


def hook_script(lab: Lab, name: str) -> str:
    path = lab.dir / f"{name}.sh"
    out = lab.dir / f"{name}.env"
    # Written aside and renamed, so that a test never reads it half-written.
    path.write_text(
        f"#!/bin/sh\nenv | grep -e ^TUNHELPER_ -e ^PATH= | sort > {out}.tmp && mv {out}.tmp {out}\n"
    )
    path.chmod(0o755)
    return str(path)


def read_env(lab: Lab, name: str) -> dict[str, str]:
    text = (lab.dir / f"{name}.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


def test_hooks_get_the_documented_environment_and_down_runs_when_sshd_dies(make_lab) -> None:
    lab = make_lab(sshd_options={"AcceptEnv": "*"})
    up, down = hook_script(lab, "up"), hook_script(lab, "down")
    client = lab.add_client(helper_args=[*POOL, "--up", up, "--down", down])
    session = client.connect("-o", "SetEnv=TUNHELPER_ADDRESS=6.6.6.6 LEAK=1")
    assert session.read_address() == "192.168.3.2"
    env = read_env(lab, "up")
    assert env["TUNHELPER_EVENT"] == "up"
    assert env["TUNHELPER_ADDRESS"] == "192.168.3.2"  # not what the client sent
    assert env["TUNHELPER_GATEWAY"] == GATEWAY and env["TUNHELPER_PREFIX"] == "32"
    assert env["TUNHELPER_MODE"] == "tun" and env["TUNHELPER_DEVICE"].startswith("tun")
    assert env["TUNHELPER_POOL"] == "192.168.3.0/24"
    assert env["TUNHELPER_CLIENT"].startswith("SHA256:")
    assert env["TUNHELPER_REMOTE_ADDRESS"].startswith("10.231.")
    assert env["TUNHELPER_REMOTE_PORT"].isdigit()
    assert "LEAK" not in (lab.dir / "up.env").read_text()
    session.configure_client_side()
    assert session.ping(GATEWAY, count=3)
    (live,) = lab.active_leases()
    assert live["bytes_in"] > 0 and live["bytes_out"] > 0  # tunhelper leases shows traffic

    lease = next(x for x in lab.leases() if x["state"] == "active")
    os.kill(lease["session_pid"], signal.SIGKILL)  # sshd's session process dies
    assert wait_until(lambda: (lab.dir / "down.env").exists(), 5)
    env = read_env(lab, "down")
    assert env["TUNHELPER_EVENT"] == "down" and env["TUNHELPER_ADDRESS"] == "192.168.3.2"
    assert int(env["TUNHELPER_BYTES_IN"]) > 0 and int(env["TUNHELPER_BYTES_OUT"]) > 0
    assert env["TUNHELPER_REASON"]


def test_a_failing_up_hook_refuses_the_session_cleanly(make_lab) -> None:
    lab = make_lab()
    down = hook_script(lab, "down")
    client = lab.add_client(helper_args=[*POOL, "--up", "/bin/false", "--down", down])
    session = client.connect()
    assert session.read_address() is None
    assert session.wait(15) not in (None, 0)
    assert "up hook /bin/false failed (exit 1)" in session.stderr()
    assert [x["state"] for x in lab.leases()] == ["released"]
    assert wait_until(lambda: lab.server_tun_devices() == [], 5)
    assert not (lab.dir / "down.env").exists()  # it never came up


def test_dns_is_announced_and_connect_says_when_it_cannot_apply_it(make_lab) -> None:
    # the gateway's own address: reached through the tunnel, so connect applies it (a
    # server the announcement routes elsewhere is ignored: tests/test_trust.py)
    lab = make_lab([*POOL, "--dns", "192.168.3.1"])
    status = connect_json(lab.add_client())
    assert status["dns"] == ["192.168.3.1"]
    conn = status["connect"]
    assert "ignoring the gateway's DNS server" not in conn.stderr()
    tools = [
        t
        for t in ("resolvectl", "resolvconf")
        if subprocess.run(["which", t], capture_output=True).returncode == 0
    ]
    if not tools:  # Debian's minimal images, and CI
        assert wait_until(lambda: "set them by hand" in conn.stderr(), 5), conn.stderr()
    else:
        shown = run("resolvectl", "dns", status["device"], ns=lab.clients[0].ns, check=False)
        assert "192.168.3.1" in shown.stdout or "set them by hand" not in conn.stderr()
    assert conn.proc.poll() is None  # the link stays up either way


def test_a_reservation_is_honoured_and_refused_while_another_holds_it(make_lab) -> None:
    lab = make_lab()
    squatter = lab.add_client("squatter")
    reserved = lab.add_client("reserved", helper_args=[*POOL, "--address", "192.168.3.2"])
    first = squatter.connect()
    assert first.read_address() == "192.168.3.2"  # first come, before the reserved key
    refused = reserved.connect()
    assert refused.read_address() is None
    assert refused.wait(15) not in (None, 0)
    assert "--address 192.168.3.2 is held by another live session" in refused.stderr()
    first.close()
    assert wait_until(lambda: not lab.active_leases(), 5)
    again = reserved.connect()
    assert again.read_address() == "192.168.3.2"


def test_max_sessions_one_ends_the_old_session_and_takes_its_address(make_lab) -> None:
    lab = make_lab()
    client = lab.add_client()
    old = client.connect()
    address = old.read_address()
    assert address is not None
    new = client.connect()
    assert new.read_address() == address  # the roaming laptop gets its address back
    assert old.wait(10) is not None  # and its old ssh was ended
    active = lab.active_leases()
    assert [x["address"] for x in active] == [address] and len(active) == 1


def test_refuse_extra_refuses_the_new_session_instead(make_lab) -> None:
    lab = make_lab([*POOL, "--refuse-extra"])
    client = lab.add_client()
    old = client.connect()
    assert old.read_address() == "192.168.3.2"
    new = client.connect()
    assert new.read_address() is None
    assert new.wait(15) not in (None, 0)
    assert "already has 1 live session(s), the most --max-sessions 1 allows" in new.stderr()
    assert old.proc.poll() is None  # the first one is untouched


@pytest.mark.parametrize("refuse", [False, True])
def test_a_burst_of_one_keys_connections_settles_on_max_sessions(make_lab, refuse) -> None:
    """Four connections of one key at once: one session is left, whichever rule applies."""
    lab = make_lab([*POOL, "--refuse-extra"] if refuse else POOL)
    client = lab.add_client()
    burst = [client.connect() for _ in range(4)]

    def settled() -> bool:
        running = [s for s in burst if s.proc.poll() is None]
        return len(running) == 1 and len(lab.active_leases()) == 1

    assert wait_until(settled, 30), (lab.active_leases(), [s.stderr() for s in burst])
    (survivor,) = [s for s in burst if s.proc.poll() is None]
    (lease,) = lab.active_leases()
    assert survivor.read_address() == lease["address"]
    if refuse:
        refused = [s.stderr() for s in burst if s is not survivor]
        assert all("the most --max-sessions 1 allows" in e for e in refused), refused


def fingerprint(client) -> str:
    out = run("ssh-keygen", "-l", "-E", "sha256", "-f", f"{client.key}.pub").stdout
    return out.split()[1]


def test_a_named_pool_from_the_config_file_with_a_reservation(make_lab) -> None:
    lab = make_lab()
    conf = lab.dir / "tunhelper.conf"
    args = ["--pool", "office", "--config", str(conf)]
    walkin, vip = (
        lab.add_client("walkin", helper_args=args),
        lab.add_client("vip", helper_args=args),
    )
    conf.write_text(
        "[pool office]\n"
        "network = 192.168.3.0/24\n"
        "mtu = 9000\n"
        "route = 10.77.0.0/16\n"
        f"[client {fingerprint(vip)}]\n"
        "pool = office\n"
        "address = 192.168.3.2\n"
    )
    first = connect_json(walkin)
    assert first["address"] == "192.168.3.3"  # .2 is reserved for the vip, even when free
    assert first["mtu"] == 9000 and first["routes"] == ["10.77.0.0/16"]
    second = connect_json(vip)
    assert second["address"] == "192.168.3.2"
    assert routes(walkin.ns, "10.77.0.0/16")[0]["dev"] == first["device"]


def test_routes_tunhelper_connect_installed_on_the_gateway_do_not_block_client_nets(
    make_lab,
) -> None:
    """A gateway that is itself a client: connect's routes carry the same protocol number
    (113) as sessions' client networks, but are no session's and must not count."""
    lab = make_lab()
    ns = lab.server_ns
    run("ip", "tuntap", "add", "thclient0", "mode", "tun", ns=ns)  # connect's own tun
    run("ip", "link", "set", "thclient0", "up", ns=ns)
    run("ip", "route", "add", "10.88.0.0/16", "dev", "thclient0", "proto", "113", ns=ns)
    site = lab.add_client("site", helper_args=[*POOL, "--client-net", "10.88.1.0/24"])
    status = connect_json(site)
    (route,) = routes(ns, "10.88.1.0/24")
    assert route["dev"] == lab.server_tun_devices()[0]
    # a live session's client network still counts
    other = lab.add_client("other", helper_args=[*POOL, "--client-net", "10.88.1.0/25"])
    refused = other.tunhelper_connect()
    assert refused.status() is None and refused.wait(15) == 1
    assert "--client-net 10.88.1.0/25 overlaps 10.88.1.0/24" in refused.stderr()
    assert status["connect"].interrupt() == 0
