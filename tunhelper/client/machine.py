"""The connect state machine: it owns the state, the kill-switch table and the journal.

Every transition (:meth:`Machine.enter`) applies the policy of the new state
(:func:`tunhelper.client.policy.passes`) as ONE nftables transaction, then records the
state for ``tunhelper status`` and systemd's ``STATUS=`` line. With ``--kill-switch``
the table is recorded in the journal before it is first written, stays through every
state but ``disconnected``, and is removed only by :meth:`Machine.finish`, which
``connect`` calls only when the user asked it to end (SIGINT, SIGTERM, ``tunhelper
disconnect``, ``systemctl stop``). Errors enter ``blocked`` (:meth:`Machine.block`):
one line saying what is wrong and what to do, and the table stays.
"""

from __future__ import annotations

import contextlib
import signal
import time

from tunhelper import log, platform
from tunhelper.client import journal as journal_
from tunhelper.client import notify, policy
from tunhelper.client.policy import State
from tunhelper.errors import TunhelperError
from tunhelper.platform.clientbase import KILL_SWITCH_TABLE

# What a new kill-switch connect sends a live one to take its table over.
HAND_OVER = signal.SIGUSR1


class Busy(TunhelperError):
    """Another live connect in this network namespace would fight ours for the host."""


class Machine:
    def __init__(
        self,
        journal: journal_.Journal,
        *,
        kill_switch: bool,
        peers: tuple[tuple[str, int], ...],
        allow_lan: bool = False,
    ) -> None:
        self.journal = journal
        self.kill_switch = kill_switch
        self.context = policy.Context(peers=peers, allow_lan=allow_lan)
        self.state = State.DISCONNECTED
        self.reconnects = 0
        self.ever_connected = False
        self._table = {"kind": "nft", "table": KILL_SWITCH_TABLE}

    # -- the start: take the host over from a dead predecessor ---------------------

    def start(self, destination: str) -> list[str]:
        """Take the host over, then give back what dead predecessors left; return the
        journals recovered.

        A live connect with a kill-switch is taken over by one with a kill-switch: the
        table is recorded here first, the other is asked to hand over (SIGUSR1: it
        gives back everything but the table and ends), and only then is the table's
        content replaced, in one transaction: no moment without a policy. Any other
        live connect here would fight ours over the host: refused.
        """
        directory = journal_.os.path.dirname(self.journal.path)
        for _, data in journal_.read_all(directory):
            if data["pid"] == self.journal.pid or not journal_.alive(data):
                continue
            theirs = any(r.get("kind") == "nft" for r in data["changes"])
            if not (self.kill_switch or theirs):
                continue
            if not (self.kill_switch and theirs and self._take_over(data)):
                state = data.get("status", {}).get("state", "running")
                raise Busy(
                    f"another connect (pid {data['pid']}, {state}) is running"
                    f"{' with a kill-switch' if theirs else ''}; end it first with "
                    "'tunhelper disconnect'"
                )
        self.journal.update(destination=destination, kill_switch=self.kill_switch)
        self.enter(State.CONNECTING, destination=destination)
        keep = (lambda r: r == self._table) if self.kill_switch else (lambda r: False)
        return journal_.recover(directory, keep)

    def _take_over(self, data: dict, wait: float = 20.0) -> bool:
        """Ask a live kill-switch connect to hand its table over; whether it ended. A
        hung one (no answer in ``wait`` seconds) is killed: its journal is then a dead
        one's, replayed by :meth:`start` with the table kept."""
        if not self.journal.has(self._table):
            self.journal.change(self._table)  # ours before theirs goes
        pid, start = int(data["pid"]), float(data["start"])
        try:
            journal_.os.kill(pid, HAND_OVER)
        except ProcessLookupError:
            return True
        if not _ended(pid, start, wait):
            log.error(f"connect pid {pid} did not hand over within {wait:g}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                journal_.os.kill(pid, signal.SIGKILL)  # hung: its journal is replayed
            if not _ended(pid, start, 5.0):
                self.journal.changes.remove(self._table)  # not ours after all: forget it
                self.journal.write()
                return False
        log.info(f"connect: took the kill-switch over from pid {pid}")
        return True

    # -- transitions ---------------------------------------------------------------

    def enter(self, state: State, **status: object) -> None:
        """Go to ``state``: its policy in one transaction, then the visible status."""
        if state is not self.state and not policy.allowed(self.state, state):
            raise TunhelperError(f"internal error: {self.state.value} -> {state.value}")
        if state is State.RECONNECTING and self.state is not State.RECONNECTING:
            self.reconnects += 1
        if self.kill_switch:
            self._apply(state, status.get("device"), bool(status.get("dns")))
        ready = state is State.CONNECTED and not self.ever_connected
        self.state = state
        self.ever_connected |= state is State.CONNECTED
        if state is not State.CONNECTED:
            status.setdefault("device", None)
        since = status.pop("since", time.time())
        fields = {"state": state.value, "since": since, "reconnects": self.reconnects}
        self.journal.update(**fields, **{k: v for k, v in status.items() if k != "dns"})
        notify.notify(*(["READY=1"] if ready else []), f"STATUS={self.status_line()}")

    def _apply(self, state: State, device: object, dns: bool) -> None:
        if state is State.CONNECTED:
            context = policy.Context(
                self.context.peers, self.context.allow_lan, str(device), dns_announced=dns
            )
        else:
            context = self.context
        passes = policy.passes(state, context)
        if passes is None:
            return  # disconnected: finish() removes the table, as the journal's change
        if not self.journal.has(self._table):
            self.journal.change(self._table)  # recorded before the table exists
        try:
            platform.client.firewall(KILL_SWITCH_TABLE, passes)
        except OSError as e:
            raise TunhelperError(f"could not apply the kill-switch: {e}") from None

    def block(self, error: str, hint: str) -> None:
        """An error under the kill-switch: blocked, said in one line; the table stays."""
        log.error(f"blocked: {error}; {hint}")
        if self.state is State.BLOCKED:
            return
        self.enter(State.BLOCKED, error=error, hint=hint)

    def failed(self, error: str, hint: str = "") -> None:
        """An error without the kill-switch: recorded for status, nothing blocked."""
        self.journal.update(error=error, hint=hint)

    def finish(self, handed_over: bool = False) -> None:
        """The user asked: give everything back, the kill-switch's table last. Handed
        over to a new connect: everything but the table, which is the new one's now."""
        if self.state is not State.DISCONNECTED:
            if self.state is not State.DISCONNECTING:
                self.enter(State.DISCONNECTING)
            keep = (lambda r: r == self._table) if handed_over else (lambda r: False)
            self.journal.give_back(keep)  # newest first: the table, recorded first, last
            self.state = State.DISCONNECTED
        self.journal.close()

    def status_line(self) -> str:
        """One line, as ``STATUS=`` and ``tunhelper status`` say it."""
        return line(self.journal.status)


def _ended(pid: int, start: float, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while platform.same_process(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def line(status: dict) -> str:
    """``connected: tun0 192.168.3.2 to root@gw (2 reconnects)`` and the like."""
    state = status.get("state", "?")
    text = state
    if state == "connected":
        text += f": {status.get('device')} {status.get('address')}"
        if status.get("address6"):
            text += f" {status['address6']}"
        text += f" to {status.get('destination')}"
    elif state in ("connecting", "reconnecting"):
        text += f" to {status.get('destination')}"
    if state == "blocked" and status.get("error"):
        text += f": {status['error']}; {status.get('hint', '')}".rstrip("; ")
    if status.get("reconnects"):
        text += f" ({status['reconnects']} reconnects)"
    return text
