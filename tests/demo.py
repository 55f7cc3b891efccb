"""A live demonstration on this one machine: ``python -m tests.demo`` (as root).

Starts a real sshd in a network namespace with tunhelper as the forced command,
connects three ``ssh -w any`` clients from namespaces of their own, and shows what
each was given and that it works; then one leaves and its lease is released.
Everything it creates is removed at the end.
"""

from __future__ import annotations

import sys
import time

from tests.lab import Lab, missing_prerequisites, run, tunhelper_command, wait_until

GATEWAY = "192.168.3.1"


def say(text: str = "") -> None:
    print(text, flush=True)


def main() -> int:
    missing = missing_prerequisites()
    if missing:
        say(f"demo: this machine lacks {', '.join(missing)}; run tools/demo.sh as root")
        return 1
    with Lab(["--pool", "192.168.3.0/24"]) as lab:
        say(f"sshd is listening in namespace {lab.server_ns}; root's authorized_keys says:")
        clients = [lab.add_client(name) for name in ("laptop", "phone", "desktop")]
        for line in (lab.dir / "authorized_keys").read_text().splitlines()[:1]:
            say(f"  {line[:150]}...")
        say()
        sessions = []
        for client in clients:
            start = time.monotonic()
            session = client.connect()
            address = session.read_address()
            if address is None:
                say(f"{client.name}: no address; ssh said: {session.stderr().strip()}")
                return 1
            took = time.monotonic() - start
            device = session.configure_client_side()
            say(
                f"{client.name:8} ran 'ssh -w any server' -> announced {address} "
                f"in {took:.2f}s (client device {device})"
            )
            sessions.append(session)
        say()
        for session in sessions:
            there = session.ping(GATEWAY)
            back = lab.ping_from_server(session.address)
            say(
                f"ping {session.client.name:8} -> gateway {GATEWAY}: {'ok' if there else 'FAILED'};"
                f"  server -> {session.address}: {'ok' if back else 'FAILED'}"
            )
        say()
        say("server devices:")
        out = run("ip", "-br", "addr", "show", "type", "tun", ns=lab.server_ns).stdout
        for line in out.splitlines():
            say(f"  {line}")
        say()
        say("tunhelper leases:")
        argv = (tunhelper_command(), "leases", "--state-dir", lab.state_dir)
        table = run(*argv, ns=lab.server_ns).stdout  # where the server's devices are
        for line in table.splitlines():
            say(f"  {line[:120]}")
        say()
        leaving = sessions[0]
        say(f"{leaving.client.name} disconnects...")
        leaving.close()
        released = wait_until(
            lambda: all(
                x["state"] == "released" for x in lab.leases() if x["address"] == leaving.address
            ),
            5,
        )
        say(
            f"  lease of {leaving.address}: {'released' if released else 'STILL ACTIVE'}; "
            f"server devices left: {', '.join(lab.server_tun_devices())}"
        )
        ok = released and all(s.ping(GATEWAY) for s in sessions[1:])
        say(f"  the others still reach the gateway: {'yes' if ok else 'NO'}")
    say()
    say("demo done: namespaces, sshd and sessions removed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
