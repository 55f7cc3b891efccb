"""``client list`` and ``client revoke`` act on the line named, never on the others.

One gateway, on SQLite and on a real PostgreSQL, with three live clients: two key
lines (alice, bob) and a cert-authority line (team-ca) whose certificate holder carol
is recorded by key ID. Listing shows each line its own leases only; revoking alice
ends her session only; revoking the CA line ends none of the key lines' sessions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.lab import Client, Lab, run, tunhelper_command
from tests.test_admin_e2e import sign
from tests.test_fleet_e2e import running_fleet

RESTRICTIONS = "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding"


@pytest.fixture(params=["sqlite", "postgresql"])
def gateway(request, make_lab) -> Iterator[Lab]:
    if request.param == "sqlite":
        yield make_lab()
        return
    with running_fleet(1) as fleet:
        yield fleet.gateways[0]


def admin(lab: Lab, *args: str) -> str:
    """A client command on the gateway, in its namespaces (where its database is)."""
    keys = str(lab.dir / "authorized_keys")
    done = lab.in_server_mounts(
        tunhelper_command(), "client", *args, "--authorized-keys", keys, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def active(lab: Lab) -> dict[str, str]:
    """``{client: address}`` of the active leases, from the gateway's own store."""
    args = lab.helper_args
    config = args[args.index("--config") : args.index("--config") + 2] if "--config" in args else []
    listed = lab.in_server_mounts(
        tunhelper_command(), "leases", "--json", "--state-dir", lab.state_dir, *config
    )
    return {x["client"]: x["address"] for x in json.loads(listed.stdout) if x["state"] == "active"}


def test_list_and_revoke_touch_only_the_line_named(gateway: Lab) -> None:
    lab = gateway
    alice, bob = lab.add_client("alice"), lab.add_client("bob")
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "team-ca", "-f", str(lab.dir / "ca"))
    lab.key_options = f"cert-authority,{RESTRICTIONS}"
    lab.authorize((lab.dir / "ca.pub").read_text().strip())
    carol = Client(lab, "carol", len(lab.clients) + 2)
    lab.clients.append(carol)
    carol.setup()
    sign(lab, carol, "carol", 1)

    sessions = {c.name: c.connect() for c in (alice, bob, carol)}
    addresses = {name: s.read_address(30) for name, s in sessions.items()}
    assert all(addresses.values()), {n: s.stderr() for n, s in sessions.items()}
    held = active(lab)
    assert held["cert:carol"] == addresses["carol"] and len(held) == 3

    listed = {r["name"]: r for r in json.loads(admin(lab, "list", "--json"))}
    assert [x["address"] for x in listed["alice"]["leases"]] == [addresses["alice"]]
    assert [x["address"] for x in listed["bob"]["leases"]] == [addresses["bob"]]
    assert listed["team-ca"]["leases"] == []  # never the key lines' sessions

    revoked = admin(lab, "revoke", "alice")
    assert "ended 1 session(s)" in revoked, revoked
    assert sessions["alice"].wait(10) is not None
    assert "client alice was revoked" in sessions["alice"].stderr()
    time.sleep(1)  # time enough for a wrongly ended session to be gone
    assert sessions["bob"].wait(0) is None and sessions["carol"].wait(0) is None
    held = active(lab)
    assert "cert:carol" in held and len(held) == 2

    revoked = admin(lab, "revoke", "team-ca")
    assert "ended 0 session(s)" in revoked and "cert-authority line" in revoked, revoked
    time.sleep(1)
    assert sessions["bob"].wait(0) is None and sessions["carol"].wait(0) is None
    assert len(active(lab)) == 2
    for s in sessions.values():
        s.close()
