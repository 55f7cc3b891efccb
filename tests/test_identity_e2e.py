"""Identity theft, end to end, as the attacker does it: a client whose SSH_USER_AUTH
sshd does not set (ExposeAuthInfo off for it, AcceptEnv letting the variable through)
names another live session's auth file, a FIFO or a device node; or no identity at all.

The victim keeps its session and address in every case; the attacker is refused in
one line, and nothing it names is opened (docs/security.md, "Identities").
"""

from __future__ import annotations

import os
import stat
import threading
import time

import psutil

from tests.lab import Lab, refused

# the thief is the second client added: 10.231.1.4 (tests/lab.py)
THIEF_NO_EXPOSE = {"AcceptEnv": "SSH_USER_AUTH", "Match": "Address 10.231.1.4\n  ExposeAuthInfo no"}


def auth_file_of(lab: Lab, address: str) -> str:
    """The SSH_USER_AUTH sshd gave the session holding ``address`` (its helper's env)."""
    (lease,) = [x for x in lab.active_leases() if x["address"] == address]
    session = psutil.Process(lease["session_pid"] if "session_pid" in lease else lease["pid"])
    for process in [session, *session.children(recursive=True)]:
        path = process.environ().get("SSH_USER_AUTH")
        if path:
            return path
    raise AssertionError("no SSH_USER_AUTH in the victim's session")


def setenv(path: str) -> tuple[str, str]:
    return ("-o", f"SetEnv=SSH_USER_AUTH={path}")


def victim_and_thief(lab: Lab):
    victim, thief = lab.add_client("victim"), lab.add_client("thief")
    held = victim.connect()
    assert held.read_address() == "192.168.3.2", held.stderr()
    held.configure_client_side()
    return held, thief


def victim_still_holds(lab: Lab, held) -> None:
    assert [x["address"] for x in lab.active_leases()] == ["192.168.3.2"]
    assert held.ping("192.168.3.1")


def test_another_live_sessions_auth_file_is_not_borrowed(make_lab) -> None:
    lab = make_lab(sshd_options=THIEF_NO_EXPOSE)
    held, thief = victim_and_thief(lab)
    path = auth_file_of(lab, "192.168.3.2")
    assert os.path.exists(path)  # genuine, root's, 0600: only its age gives it away
    # Process start times are known to about a second (docs/security.md): a file
    # written within that second of the thief's session could pass; older ones never.
    time.sleep(1.2)
    line = refused(thief.connect(*setenv(path)), 15)
    assert "SSH_USER_AUTH" in line, line
    victim_still_holds(lab, held)


def test_a_fifo_named_as_auth_file_is_never_opened(make_lab) -> None:
    lab = make_lab(sshd_options=THIEF_NO_EXPOSE)
    held, thief = victim_and_thief(lab)
    fifo = str(lab.dir / "auth.fifo")
    os.mkfifo(fifo, 0o600)
    opened = threading.Event()

    def writer() -> None:  # its open returns only once someone opens the FIFO to read
        with open(fifo, "wb"):
            opened.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    line = refused(thief.connect(*setenv(fifo)), 15)
    assert "SSH_USER_AUTH" in line, line
    assert not opened.is_set()  # the helper never opened it
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
    thread.join(5)
    assert opened.is_set()  # the check could see an open
    victim_still_holds(lab, held)


def test_a_device_node_named_as_auth_file_is_refused(make_lab) -> None:
    lab = make_lab(sshd_options=THIEF_NO_EXPOSE)
    held, thief = victim_and_thief(lab)
    node = str(lab.dir / "auth.dev")
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a harmless /dev/null node
    line = refused(thief.connect(*setenv(node)), 15)
    assert "SSH_USER_AUTH" in line, line
    victim_still_holds(lab, held)


def test_without_an_identity_a_key_never_ends_another_keys_session(make_lab) -> None:
    """ExposeAuthInfo off (or a full /tmp): every key is the login name, a fallback."""
    lab = make_lab(
        ["--pool", "192.168.3.0/24", "--max-sessions", "1"], sshd_options={"ExposeAuthInfo": "no"}
    )
    held, thief = victim_and_thief(lab)
    line = refused(thief.connect(), 15)
    assert "--max-sessions" in line, line
    victim_still_holds(lab, held)
