"""The admin commands' options: leases, release, renew, repair, doctor, client."""

from __future__ import annotations

import argparse

from tunhelper import defaults
from tunhelper.options.schema import Parser, add
from tunhelper.options.serve import SERVE_OPTION
from tunhelper.options.types import identity_name, path

DOCTOR_DESCRIPTION = """\
Check this gateway's setup and print one line per finding, "ok:", "warning:" or
"error:"; exit 1 if there is any error. Nothing is changed.

checks:
  sshd        'sshd -T -C user=root' (Match User blocks apply, those on an address or
              host cannot): PermitTunnel (not no), PermitRootLogin
              (forced-commands-only), ExposeAuthInfo (yes: clients told apart by key),
              MaxStartups (clients connecting at once), AcceptEnv (no pattern may let
              through LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, BASH_ENV, BASH_FUNC_*,
              PYTHONPATH, PYTHONHOME, PYTHONINSPECT or SSH_USER_AUTH),
              ClientAliveInterval (not 0: a vanished client's session ends);
              with OpenSSH's version from 'sshd -V': DisableForwarding (not yes: from
              10.4 it refuses tunnels), PerSourcePenalties (9.8+: explained),
              ChannelTimeout (no session or tun-connection type: they close idle
              tunnels), PermitTunnel against tap pools
  keys        each line of root's authorized_keys (AuthorizedKeysFile, or
              --authorized-keys) whose command runs tunhelper: not 'restrict' (from
              OpenSSH 10.5 it blocks tunnels; below, a warning); no-pty,
              no-port-forwarding, no-agent-forwarding, no-X11-forwarding; its
              arguments, checked by the helper's own parsers; the program given by
              absolute path; pools of different lines neither overlapping nor split
              across state directories;
              no pool (either family) inside a network of this host's interfaces
              (the helper refuses those sessions); IPv4/IPv6 forwarding on for keys
              with --route or --client-net of that family
  devices     /dev/net/tun is there; no persistent tunN/tapN device a client could ask
              sshd to attach to (ssh -w any:N); net.ipv4.conf.all.rp_filter not loose
              (2), which would let a client send packets in another client's name
  state       each state directory (--state-dir, else those the keys name) owned by
              root and not writable by others; its lease database opened read-only and
              checked by SQLite (PRAGMA integrity_check), with what to do if it is not
              sound
  store       a shared [store] (backend = postgresql) the keys' config files name:
              the file's mode, the connection, the schema version (read only: never
              created or migrated here), this clock against the database's, and pools
              overlapping another gateway's with a different prefix"""


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    add(parser, SERVE_OPTION["state-dir"])


def _add_store_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=path,
        metavar="PATH",
        help=f"the config file whose [store] names the lease store (default "
        f"{defaults.CONFIG_PATH} if it exists; without a [store]: SQLite in --state-dir)",
    )


def leases_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tunhelper leases", description="List the leases and their state.")
    p.add_argument(
        "--format",
        choices=("table", "json", "prometheus"),
        default="table",
        metavar="FORMAT",
        help="table: one per pool (default); json: a list of objects; prometheus: the text "
        "exposition format (pools, live sessions' counters, refusals)",
    )
    p.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )
    p.add_argument("--pool", metavar="POOL", help="only this pool's leases (its network)")
    p.add_argument(
        "--client",
        metavar="NAME",
        help="only the leases of the client line NAME (tunhelper client list) or of the "
        "identity NAME, exactly",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write to FILE atomically (a temporary file, then a rename) instead of "
        "stdout: for node_exporter's textfile collector; mode 0600, it names clients",
    )
    p.add_argument(
        "--output-group",
        metavar="GROUP",
        help="FILE readable by GROUP too (mode 0640), e.g. the textfile collector's",
    )
    _add_state_dir(p)
    _add_store_config(p)
    return p


def release_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tunhelper release", description="Free a lease by hand.")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--force", action="store_true", help="free it even though a live session still uses it"
    )
    _add_state_dir(p)
    _add_store_config(p)
    return p


def renew_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper renew",
        description="Renew this gateway's live leases in every shared lease store its keys' "
        "lines reach, and --config's (one statement each), and release its dead ones.",
    )
    _add_state_dir(p)
    _add_store_config(p)
    _add_authorized_keys(p)
    p.add_argument(
        "--loop",
        action="store_true",
        help="renew for ever, each store every lifetime/3 (tunhelper-renew.service)",
    )
    return p


def repair_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper repair",
        description="Give back what killed helpers left behind: bridges tunhelper created "
        "that no session uses any more.",
    )
    _add_state_dir(p)
    return p


def doctor_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper doctor",
        description=DOCTOR_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sshd-config",
        type=path,
        metavar="PATH",
        help="sshd's configuration file (default: sshd's own, /etc/ssh/sshd_config)",
    )
    p.add_argument(
        "--authorized-keys",
        type=path,
        metavar="PATH",
        help="root's authorized_keys (default: from sshd's AuthorizedKeysFile)",
    )
    p.add_argument(
        "--state-dir",
        type=path,
        metavar="DIR",
        help="the state directory to check (default: those the keys' lines name)",
    )
    return p


def _add_authorized_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--authorized-keys",
        type=path,
        metavar="PATH",
        help="root's authorized_keys (default: the first of sshd's AuthorizedKeysFile)",
    )


def client_add_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper client add",
        description="Add a client: one authorized_keys line with the restrictions, the full "
        "path of this tunhelper with the OPTIONs (checked by the helper's own parsers), "
        "the key, and NAME as its comment. The edit is atomic; other lines are kept.",
        epilog="example: tunhelper client add laptop --key 'ssh-ed25519 AAAA...' -- "
        "--pool 192.168.3.0/24 --max-leases 2",
    )
    p.add_argument("name", metavar="NAME", type=identity_name, help="the client's name")
    p.add_argument("--key", required=True, metavar="KEY", help="its public key line")
    p.add_argument(
        "--program",
        type=path,
        metavar="PATH",
        help="tunhelper's full path on the line (default: this one's)",
    )
    _add_authorized_keys(p)
    p.add_argument(
        "helper", nargs="*", metavar="OPTION", help="after --: the helper's options (--pool ...)"
    )
    return p


def client_list_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper client list",
        description="List the authorized_keys lines that run tunhelper, with live leases.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    _add_authorized_keys(p)
    return p


def client_revoke_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tunhelper client revoke",
        description="Remove a client's line and end its live sessions at once.",
    )
    p.add_argument("name", metavar="NAME", type=identity_name, help="the client's name")
    _add_authorized_keys(p)
    return p


# Every command's parser, by command name ("" is the forced command). The man page is
# checked against this registry (tests/test_manpage.py): a command added here without
