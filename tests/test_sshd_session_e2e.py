"""Discovery does not depend on process names: OpenSSH 9.8 split sshd's session out into
``sshd-session`` (Debian 13's 10.0p2 has ``sshd``, ``sshd-session`` and ``sshd-auth``),
and the helper still finds its device by walking up to the nearest ancestor holding a
tun fd. This test runs under whatever sshd is installed (CI runs it on Debian 12's 9.2p1
and in Debian 13's tree) and asserts the holder is the binary that release must use.
"""

from __future__ import annotations

import os

import psutil

from tests.lab import SSHD
from tests.test_e2e import assert_nothing_left, connected, lease_of
from tunhelper.admin import openssh
from tunhelper.platform import linux

GATEWAY = "192.168.3.1"
SPLIT = (9, 8, 0)  # the first OpenSSH whose sessions run in sshd-session


def test_helper_finds_its_device_under_the_installed_sshds_session_binary(make_lab) -> None:
    version, said = openssh.sshd_version(SSHD)
    assert version is not None, said
    expected = "sshd-session" if version >= SPLIT else "sshd"
    lab = make_lab()
    session = connected(lab.add_client())
    lease = lease_of(lab, session.address)
    holder = psutil.Process(lease["session_pid"])
    binary = os.path.basename(os.readlink(f"/proc/{holder.pid}/exe"))
    assert binary == expected, (said, binary, holder.cmdline())
    # the holder is the helper's ancestor and holds exactly the lease's device
    ancestors = [p.pid for p in psutil.Process(lease["pid"]).parents()]
    assert holder.pid in ancestors
    assert linux.held_devices(holder.pid) == [lease["device"]]
    # no ancestor between the helper and it holds a tun fd: it is the nearest holder
    assert not [pid for pid in ancestors[: ancestors.index(holder.pid)] if linux.held_devices(pid)]
    # and the session works
    assert session.ping(GATEWAY)
    assert lab.ping_from_server(session.address)
    session.close()
    assert_nothing_left(lab)
