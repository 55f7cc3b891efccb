"""``tunhelper connect``, ``disconnect`` and ``status``: the client side's options.

:data:`CONNECT_OPTIONS` is connect's one table: the parser is built from it, and
``connect.Options`` from what it parsed (:func:`~tunhelper.options.schema.build`): each
of that record's fields is an option's ``dest``, except ``destination`` and ``more``,
the first DESTINATION and the rest.
"""

from __future__ import annotations

import argparse

from tunhelper import defaults
from tunhelper.options.schema import Option, Parser, add
from tunhelper.options.types import destination, path, seconds, ssh_command

CONNECT_EPILOG = """\
exit status:
  0    ended on request (SIGINT, SIGTERM, 'tunhelper disconnect')
  1    the link never came up (the server refused, no device, no announcement)
  2    bad arguments
  3    the ssh connection ended after the link was up (without --reconnect)
  4    the local device disappeared (without --reconnect)
  5    ssh could not authenticate (key or host key): never retried
  70   an internal error (reported in one line)
  130  interrupted before the link was up

With --reconnect, a lost link is brought back with exponential backoff (up to about a
minute, with jitter), through the next DESTINATION if several are given; a refusal
by the server (1) or an authentication failure (5) ends connect at once.

With --kill-switch connect fails closed: nothing but SIGINT/SIGTERM (also from
'tunhelper disconnect' or 'systemctl stop') removes the blocking. A failure (a
refusal, a changed host key, a lost link without --reconnect) leaves it BLOCKED and
running: one line says what is wrong and what to do, 'tunhelper status' shows it, and
the code above is its exit status once the user ends it.
"""


CONNECT_OPTIONS: tuple[Option, ...] = (
    Option(
        "profile",
        "read destinations and options from /etc/tunhelper/connect/NAME.conf "
        "(what tunhelper-connect@NAME.service runs)",
        metavar="NAME",
    ),
    Option(
        "reconnect",
        "bring the link back when it is lost, with backoff (the default in a profile)",
        flag=True,
        default=False,
    ),
    Option("shuffle", "try the destinations in a random order", flag=True, default=False),
    Option(
        "kill-switch",
        "with a full tunnel, drop all traffic leaving outside it (nftables), also "
        "while reconnecting; only the ssh connection itself passes",
        flag=True,
        default=False,
    ),
    Option(
        "allow-lan",
        "with --kill-switch: let traffic to the private networks (10/8, 172.16/12, "
        "192.168/16, link-local, fc00::/7) through outside the tunnel (off by default)",
        flag=True,
        default=False,
    ),
    Option(
        "multiplex",
        "keep your ControlMaster/ControlPath (default: its own connection, -S none)",
        flag=True,
        default=False,
    ),
    Option(
        "no-aes-gcm",
        "do not prefer AES-GCM when the CPU has AES and ssh_config chooses no ciphers",
        flag=True,
        negated=True,
        default=True,
        fills="aes",
    ),
    Option(
        "ssh-cmd",
        'the ssh command to run, e.g. "ssh -i key -p 2222" (default: ssh)',
        type=ssh_command,
        default=["ssh"],
        metavar="CMD",
        short="-e",
    ),
    Option("tap", "ask for an ethernet (tap) link: -o Tunnel=ethernet", flag=True, default=False),
    Option(
        "wait",
        f"how long to wait for the server's announcement (default {defaults.CONNECT_WAIT:g})",
        type=seconds,
        default=defaults.CONNECT_WAIT,
        metavar="SECONDS",
    ),
    Option("json", "print the status line as JSON", flag=True, default=False, fills="as_json"),
    Option(
        "background",
        "detach once the link is up; end it with 'tunhelper disconnect'",
        flag=True,
        default=False,
    ),
    Option(
        "pid-file",
        "pid file for --background (default /run/tunhelper/connect-DEVICE.pid)",
        type=path,
        metavar="PATH",
    ),
)


def connect_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper connect",
        description="Run 'ssh -w any DESTINATION' and configure this end of the tunnel\n"
        "from what the server's tunhelper announces. Stays until ssh ends or a signal.",
        epilog=CONNECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "destination",
        nargs="*",
        metavar="DESTINATION",
        type=destination,
        help="[user@]host, as for ssh (your ~/.ssh/config applies); several: failover, "
        "tried in order",
    )
    for option in CONNECT_OPTIONS:
        add(p, option)
    return p


def disconnect_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper disconnect",
        description="End a background 'tunhelper connect' (all of them if no DEVICE).",
    )
    p.add_argument("device", nargs="?", metavar="DEVICE", help="the local device, e.g. tun0")
    p.add_argument(
        "--pid-file",
        type=path,
        metavar="PATH",
        help="the pid file given to connect --pid-file",
    )
    return p


def status_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper status",
        description="Show every running 'tunhelper connect' on this host: state, "
        "destination, device, addresses, since when, bytes both ways, reconnects, the "
        "last error and what to do.",
    )
    p.add_argument("--json", action="store_true", help="a JSON list, one object per connect")
    return p
