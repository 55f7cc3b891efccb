"""The connect state machine's pure logic: what passes in each state, which
transitions exist, one firewall transaction per transition, the journal written
before each change, the blocked line for a changed host key, ssh pinned to the
addresses resolved before blocking. The nftables script is loaded by the real
``nft`` into a network namespace of its own, so its syntax is the kernel's word."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tunhelper.client import diagnose, journal, machine, policy, sshconfig
from tunhelper.client.policy import State
from tunhelper.errors import TunhelperError
from tunhelper.platform import clientbase
from tunhelper.platform.clientbase import Passes
from tunhelper.platform.freebsd import client as freebsd_client
from tunhelper.platform.linux import client as linux_client
from tunhelper.platform.linux import dns, killswitch

PEERS = (("10.231.0.1", 22), ("fd31::1", 2222))


def test_each_state_has_its_policy() -> None:
    context = policy.Context(PEERS, device="tun3", dns_announced=True)
    assert policy.passes(State.DISCONNECTED, context) is None
    for state in (State.CONNECTING, State.RECONNECTING):
        assert policy.passes(state, context) == Passes(peers=PEERS)  # no tunnel yet
    assert policy.passes(State.CONNECTED, context) == Passes(PEERS, "tun3", (), False)
    for state in (State.BLOCKED, State.DISCONNECTING):
        assert policy.passes(state, context) == Passes()  # nothing but the basics
    lan = policy.passes(State.BLOCKED, policy.Context(PEERS, allow_lan=True))
    assert lan is not None and "192.168.0.0/16" in lan.lan and not lan.peers


def test_only_the_users_request_leaves_blocked() -> None:
    assert policy.NEXT[State.BLOCKED] == {State.DISCONNECTING}
    for state in State:
        if state not in (State.DISCONNECTING, State.DISCONNECTED):
            assert policy.allowed(state, State.BLOCKED) or state is State.BLOCKED
    assert not policy.allowed(State.CONNECTED, State.DISCONNECTED)  # never straight open


def _netns():
    name = f"thk-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    return name


@pytest.mark.parametrize(
    "passes",
    [
        Passes(peers=PEERS),
        Passes(PEERS, "tun0", policy.LAN, dns_outside=False),
        Passes(lan=policy.LAN),
        Passes(),
    ],
    ids=["connecting", "connected-lan", "blocked-lan", "blocked"],
)
def test_the_script_loads_and_replaces_the_table_in_one_transaction(passes: Passes) -> None:
    ns = _netns()
    try:
        nft = ["ip", "netns", "exec", ns, "nft"]
        first = killswitch.script("tunhelper_client", Passes(peers=PEERS))
        subprocess.run([*nft, "-f", "-"], input=first, text=True, check=True)
        text = killswitch.script("tunhelper_client", passes)
        assert "delete" not in text  # the table is never removed on the way
        subprocess.run([*nft, "-f", "-"], input=text, text=True, check=True)
        listed = json.loads(subprocess.run([*nft, "-j", "list", "ruleset"], text=True,
                                           capture_output=True, check=True).stdout)  # fmt: skip
        tables = [i["table"]["name"] for i in listed["nftables"] if "table" in i]
        chains = {i["chain"]["name"]: i["chain"] for i in listed["nftables"] if "chain" in i}
        assert tables == ["tunhelper_client"]
        assert set(chains) == {"input", "output", "forward"}
        assert all(c["policy"] == "drop" for c in chains.values())
        ruleset = subprocess.run([*nft, "list", "ruleset"], text=True, capture_output=True).stdout
        assert ("tun0" in ruleset) == (passes.device is not None)
        assert ("10.231.0.1" in ruleset) == bool(passes.peers)  # the old content is gone
        assert "nd-neighbor-solicit" in ruleset and "dport 67" in ruleset
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_the_script_never_carries_text_that_is_not_an_address_or_a_name() -> None:
    with pytest.raises(ValueError):
        killswitch.script("t", Passes(peers=(("1.2.3.4 accept; drop", 22),)))
    with pytest.raises(ValueError):
        killswitch.script("t", Passes(device='tun0" accept'))


class FakeFirewall:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Passes | None]] = []

    def __call__(self, table: str, passes: Passes | None) -> dict:
        self.calls.append((table, passes))
        return {"kind": "nft", "table": table}


@pytest.fixture
def fake(monkeypatch, tmp_path: Path):
    firewall = FakeFirewall()
    undone: list[dict] = []
    monkeypatch.setattr(linux_client, "firewall", firewall)
    monkeypatch.setattr(linux_client, "undo", undone.append)
    monkeypatch.setattr(machine.notify, "notify", lambda *fields: False)
    book = journal.Journal(str(tmp_path))
    return firewall, undone, book


def test_every_transition_is_one_transaction_and_the_table_goes_last(fake) -> None:
    firewall, undone, book = fake
    m = machine.Machine(book, kill_switch=True, peers=PEERS)
    m.enter(State.CONNECTING, destination="gw")
    assert len(firewall.calls) == 1 and firewall.calls[0][1] == Passes(peers=PEERS)
    on_disk = json.loads(Path(book.path).read_text())
    assert on_disk["changes"] == [{"kind": "nft", "table": clientbase.KILL_SWITCH_TABLE}]
    book.change({"kind": "rule", "priority": 7461})
    m.enter(State.CONNECTED, device="tun0", address="192.168.3.2", destination="gw")
    assert firewall.calls[-1][1].device == "tun0" and len(firewall.calls) == 2
    m.block("the gateway refused", "see its line")
    assert firewall.calls[-1][1] == Passes() and m.state is State.BLOCKED
    assert json.loads(Path(book.path).read_text())["status"]["error"] == "the gateway refused"
    with pytest.raises(TunhelperError):
        m.enter(State.CONNECTING)  # nothing but the user's request leaves blocked
    m.finish()
    assert [r["kind"] for r in undone] == ["rule", "nft"]  # the table last
    assert not Path(book.path).exists()


def test_without_the_kill_switch_no_table_is_ever_written(fake) -> None:
    firewall, undone, book = fake
    m = machine.Machine(book, kill_switch=False, peers=PEERS)
    m.enter(State.CONNECTING, destination="gw")
    m.enter(State.CONNECTED, device="tun0", address="192.168.3.2", destination="gw")
    m.finish()
    assert firewall.calls == [] and undone == []


def test_a_change_is_on_disk_before_it_is_made(tmp_path: Path) -> None:
    book = journal.Journal(str(tmp_path))
    seen = []
    book.change({"kind": "rule", "priority": 1}, lambda r: seen.append(Path(book.path).read_text()))
    assert '"priority": 1' in seen[0]


def test_a_dead_journal_is_replayed_and_a_kept_table_survives(tmp_path: Path, monkeypatch) -> None:
    undone: list[dict] = []
    monkeypatch.setattr(linux_client, "undo", undone.append)
    changes = [{"kind": "nft", "table": "tunhelper_client"}, {"kind": "rule"}]
    dead = {"pid": 1, "start": 1.0, "netns": journal.netns(), "status": {}, "changes": changes}
    (tmp_path / "client-1.json").write_text(json.dumps(dead))
    other = {**dead, "netns": journal.netns() + 1}
    (tmp_path / "client-2.json").write_text(json.dumps({**other, "pid": 2}))
    done = journal.recover(str(tmp_path), keep=lambda r: r.get("kind") == "nft")
    assert done == [str(tmp_path / "client-1.json")]
    assert undone == [{"kind": "rule"}]  # the table kept; another namespace's untouched
    assert (tmp_path / "client-2.json").exists()


CHANGED = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r
The fingerprint for the ED25519 key sent by the remote host is\r
SHA256:PbWYkb7wrVNexp3v09bGSpJWVAB8Wl39Hqd7YOFqyk4.\r
Offending ED25519 key in /root/.ssh/known_hosts:3\r
Host key verification failed.\r
"""


def test_a_changed_host_key_names_the_key_and_the_possible_attack() -> None:
    what, todo = diagnose.host_key(CHANGED, "root@gw")
    assert "SHA256:PbWYkb7wrVNexp3v09bGSpJWVAB8Wl39Hqd7YOFqyk4" in what
    assert "ED25519" in what and "hostile" in what and "known_hosts:3" in what
    assert "blocked" in todo and "\n" not in what + todo
    unknown = "No ED25519 host key is known for gw and you have requested strict checking.\n"
    assert (
        "could not be verified"
        in diagnose.host_key(unknown + "Host key verification failed.", "gw")[0]
    )
    assert diagnose.host_key("Permission denied (publickey).", "gw") is None  # not a key issue


def test_ssh_is_pinned_to_the_resolved_address_under_the_known_hosts_name() -> None:
    named = sshconfig.parse("hostname gw.example.net\nport 22\n")
    assert sshconfig.pinned(named, [("192.0.2.7", 22)]) == [
        "-o", "HostName=192.0.2.7", "-o", "HostKeyAlias=gw.example.net",
    ]  # fmt: skip
    other_port = sshconfig.parse("hostname gw.example.net\nport 2222\n")
    assert "HostKeyAlias=[gw.example.net]:2222" in sshconfig.pinned(
        other_port, [("192.0.2.7", 2222)]
    )
    assert sshconfig.pinned(sshconfig.parse("hostname 192.0.2.7\n"), [("192.0.2.7", 22)]) == []
    jump = sshconfig.parse("hostname gw\nproxyjump bastion\n")
    assert sshconfig.pinned(jump, [("192.0.2.9", 22)]) == []
    alias = sshconfig.parse("hostname gw\nhostkeyalias mine\n")
    assert sshconfig.pinned(alias, [("192.0.2.7", 22)]) == ["-o", "HostName=192.0.2.7"]


def test_resolved_gets_the_default_dns_route_only_on_a_full_tunnel() -> None:
    full = {"tool": "resolvectl", "device": "tun0", "servers": ["192.168.3.53"], "full": True}
    assert [argv for argv, _ in dns.commands(full)] == [
        ["resolvectl", "dns", "tun0", "192.168.3.53"],
        ["resolvectl", "domain", "tun0", "~."],
        ["resolvectl", "default-route", "tun0", "yes"],
    ]
    split = [argv for argv, _ in dns.commands({**full, "full": False})]
    assert ["resolvectl", "default-route", "tun0", "no"] in split
    assert not any("~." in argv for argv in split)


def test_backends_declare_their_capabilities_and_provide_every_concern() -> None:
    for backend in (linux_client, freebsd_client):
        assert isinstance(backend.CAPABILITIES, clientbase.Capabilities)
        for protocol in (*clientbase.CONCERNS.values(), clientbase.Changes, clientbase.Scope):
            assert isinstance(backend, protocol), (backend.__name__, protocol.__name__)
    lacking = clientbase.missing(freebsd_client.CAPABILITIES, {"firewall": True})
    assert lacking == ["firewall"]  # refused at start, never mid-session
    assert clientbase.missing(linux_client.CAPABILITIES, {"firewall": True}) == []
