"""The client's pure logic: ssh options from ``ssh -G``, backoff, failover order, full-tunnel
recognition, profiles, the notify protocol and the systemd unit."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest

from tests.lab import REPO
from tunhelper.client import fulltunnel, notify, profile, reconnect, sshconfig
from tunhelper.errors import UsageError
from tunhelper.protocol import Announcement

BUILTIN = "chacha20-poly1305@openssh.com,aes128-ctr,aes128-gcm@openssh.com"


def effective(**values: str) -> sshconfig.Effective:
    base = {"hostname": "gw.example", "port": "22", "serveraliveinterval": "0"}
    base.update({"ciphers": BUILTIN, **values})
    return sshconfig.Effective(base)


def test_ssh_G_output_keeps_the_first_value_of_each_key() -> None:
    parsed = sshconfig.parse("hostname a\nport 2222\nhostname b\nProxyJump j:2200\n")
    assert parsed.get("hostname") == "a" and parsed.get("proxyjump") == "j:2200"


@pytest.mark.parametrize(
    ("jump", "hop"),
    [
        ("none", ("gw.example", 2222)),
        ("jump1,jump2", ("jump1", 22)),
        ("user@jump1:2200,jump2", ("jump1", 2200)),
        ("ssh://user@[2001:db8::1]:2201", ("2001:db8::1", 2201)),
    ],
)
def test_the_first_hop_is_proxyjumps_first_jump(jump: str, hop: tuple[str, int]) -> None:
    assert effective(port="2222", proxyjump=jump).first_hop == hop


def test_own_connection_alive_and_aes_unless_the_user_chose() -> None:
    added = sshconfig.added_options(
        effective(), multiplex=False, cpu_aes=True, builtin_ciphers=BUILTIN
    )
    assert added == [*sshconfig.OWN_CONNECTION, *sshconfig.ALIVE, *sshconfig.AES_FIRST]
    chosen = effective(serveraliveinterval="5", ciphers="aes256-ctr")
    assert (
        sshconfig.added_options(chosen, multiplex=True, cpu_aes=True, builtin_ciphers=BUILTIN) == []
    )
    no_aes = sshconfig.added_options(
        effective(), multiplex=True, cpu_aes=False, builtin_ciphers=BUILTIN
    )
    assert no_aes == sshconfig.ALIVE


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [reconnect.delay(n, rng) for n in range(12)]
    assert 0.5 <= delays[0] <= 1.0
    assert all(d <= reconnect.CAP for d in delays)
    assert delays[-1] >= reconnect.CAP / 2
    assert len({round(reconnect.delay(10, rng), 3) for _ in range(5)}) > 1  # jitter


def test_shuffle_is_an_option_and_keeps_every_gateway() -> None:
    gws = [f"gw{i}" for i in range(8)]
    assert reconnect.order(gws, False) == gws
    shuffled = reconnect.order(gws, True, random.Random(1))
    assert sorted(shuffled) == gws and shuffled != gws


def test_auth_failures_and_refusals_are_told_apart_from_the_network() -> None:
    assert reconnect.is_auth_failure("root@gw: Permission denied (publickey).\n")
    assert reconnect.is_auth_failure("Host key verification failed.\n")
    assert not reconnect.is_auth_failure("ssh: connect to host gw port 22: No route to host\n")
    assert reconnect.is_refusal("tunhelper: pool 10.0.0.0/30 is exhausted\nConnection closed\n")
    assert not reconnect.is_refusal("Connection to gw closed by remote host.\n")


def ann(routes: list[str]) -> Announcement:
    return Announcement("192.168.3.2", 32, "192.168.3.1", "tun", 1500, routes)


def test_full_tunnel_is_the_two_halves_or_a_default_per_family() -> None:
    halves = ["0.0.0.0/1", "128.0.0.0/1", "10.9.0.0/16"]
    assert fulltunnel.families(ann(halves)) == [4]
    assert fulltunnel.other_routes(ann(halves), [4]) == ["10.9.0.0/16"]
    assert fulltunnel.families(ann(["::/1", "8000::/1", "0.0.0.0/1"])) == [6]
    assert fulltunnel.families(ann(["0.0.0.0/1"])) == []
    assert fulltunnel.other_routes(ann(["0.0.0.0/1"]), []) == ["0.0.0.0/1"]


def test_a_profile_becomes_connect_arguments() -> None:
    text = (
        "# office\n"
        "destination = root@gw1 root@gw2\n"
        "ssh = ssh -i /root/.ssh/k -o 'ProxyJump=j#1'\n"
        "kill-switch = yes   # drop leaks\n"
        "aes-gcm = no\n"
    )
    argv = profile.parse(text, "office.conf")
    assert argv == [
        "--ssh-cmd",
        "ssh -i /root/.ssh/k -o 'ProxyJump=j#1'",
        "--kill-switch",
        "--no-aes-gcm",
        "--reconnect",
        "--",
        "root@gw1",
        "root@gw2",
    ]
    assert "--reconnect" not in profile.parse("destination = gw\nreconnect = no\n", "p")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ssh = ssh\n", "no 'destination"),
        ("destination = gw\ncolour = blue\n", "p:2: unknown key 'colour'"),
        ("destination = gw\nreconnect = maybe\n", "p:2: reconnect must be yes or no"),
        ("destination = gw\ndestination = gw2\n", "p:2: destination is given twice"),
        ("destination\n", "p:1: expected 'key = value'"),
    ],
)
def test_a_bad_profile_is_one_line_with_its_place(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        profile.parse(text, "p")
    assert "\n" not in str(info.value)


def test_a_profile_others_may_write_or_a_bad_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "office.conf"
    path.write_text("destination = gw\n")
    path.chmod(0o664)
    with pytest.raises(UsageError, match="not group/other-writable"):
        profile.read("office", str(tmp_path))
    path.chmod(0o644)
    if os.geteuid() == 0:
        assert profile.read("office", str(tmp_path))[-1] == "gw"
    with pytest.raises(UsageError, match="profile name"):
        profile.read("../etc/passwd", str(tmp_path))


def test_notify_writes_the_datagram_systemd_reads(tmp_path: Path, monkeypatch) -> None:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert notify.notify("READY=1", "STATUS=tun0 192.168.3.2")
        assert server.recv(4096) == b"READY=1\nSTATUS=tun0 192.168.3.2"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify.notify("READY=1")  # not under systemd: nothing, no error


def test_notify_to_an_abstract_socket(monkeypatch) -> None:
    name = f"tunhelper-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify("STATUS=reconnecting")
        assert server.recv(4096) == b"STATUS=reconnecting"


def test_the_unit_is_type_notify_restarts_on_failure_and_runs_the_profile() -> None:
    unit = (REPO / "debian" / "tunhelper.tunhelper-connect@.service").read_text()
    lines = set(unit.splitlines())
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "ExecStart=/usr/bin/tunhelper connect --profile %i",
        "RestartPreventExitStatus=1 5",
    ):
        assert line in lines


def test_the_ssh_peer_is_found_in_a_proxy_child(tmp_path: Path) -> None:
    """With ProxyJump, ssh's TCP connection belongs to a child: it is found there."""
    import subprocess
    import sys

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (
            f"import socket,time; s=socket.create_connection(('127.0.0.1',{port})); time.sleep(30)"
        )
        parent = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "{code}"; :'])
        try:
            conn, _ = listener.accept()
            with conn:
                assert fulltunnel.ssh_peer(parent.pid) == "127.0.0.1"
        finally:
            import psutil

            for child in psutil.Process(parent.pid).children(recursive=True):
                child.kill()
            parent.kill()
            parent.wait()
