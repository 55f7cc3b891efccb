"""Waiting for the end of a session: a pidfd and a netlink link socket in poll(2)."""

from __future__ import annotations

import errno
import os
import select
import socket

from tunhelper.platform.base import DEVICE_GONE, PROCESS_ENDED, DeviceInfo
from tunhelper.platform.linux import rtnetlink
from tunhelper.platform.linux.proc import same_process


def _device_present(device: DeviceInfo) -> bool:
    try:
        return socket.if_nametoindex(device.name) == device.index
    except OSError:
        return False


def _drain(nl: socket.socket, device: DeviceInfo) -> tuple[int, int] | None:
    """The device's last counters, if its deletion is already queued (no waiting)."""
    while True:
        try:
            data = nl.recv(65536, socket.MSG_DONTWAIT)
        except OSError:
            return None
        if not data:
            return None
        deleted, counters = rtnetlink.link_deleted(data, device.index)
        if deleted:
            return counters


def wait_for_end(
    pid: int, start_time: float, device: DeviceInfo
) -> tuple[str, tuple[int, int] | None]:
    """Sleep in poll(2) on a pidfd and a netlink link socket: no busy loop.

    Returns why it ended and the device's last ``(rx_bytes, tx_bytes)`` if its deletion
    was seen (``None`` otherwise: the device may still be there to read). Signals
    interrupt poll(2); their handler raises, and the sockets are closed on the way out.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return PROCESS_ENDED, None
    try:
        nl = rtnetlink.link_events()
    except BaseException:
        os.close(pidfd)
        raise
    try:
        # Subscribed first, checked second: an end that happened before we listened
        # is seen here, one that happens after arrives as an event.
        if not same_process(pid, start_time):
            return PROCESS_ENDED, None  # gone, or the pid now names another process
        if not _device_present(device):
            return DEVICE_GONE, None
        poller = select.poll()
        for fd in (pidfd, nl.fileno()):
            poller.register(fd, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == pidfd:  # the device went as sshd exited: keep its counters
                    return PROCESS_ENDED, _drain(nl, device)
                try:
                    data = nl.recv(65536)
                except OSError as e:  # ENOBUFS: events were lost, so look directly
                    if e.errno != errno.ENOBUFS:
                        raise
                    if not _device_present(device):
                        return DEVICE_GONE, None
                    continue
                deleted, counters = rtnetlink.link_deleted(data, device.index)
                if deleted:
                    return DEVICE_GONE, counters
    finally:
        nl.close()
        os.close(pidfd)
