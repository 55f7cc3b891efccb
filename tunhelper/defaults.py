"""Defaults and limits, in one place: the parsers, the session and the client read them here.

A leaf module (no imports), so that the slim holding process may read it too.
"""

DEFAULT_STATE_DIR = "/var/lib/tunhelper"
CONFIG_PATH = "/etc/tunhelper/tunhelper.conf"
RUN_DIR = "/run/tunhelper"  # the client's pid files and state records

DEVICE_WAIT = 5.0  # how long the helper waits for sshd's device (--wait)
CONNECT_WAIT = 30.0  # how long connect waits for the announcement (connect --wait)
MAX_WAIT = 60.0  # the most any --wait or --db-timeout may be
DB_TIMEOUT = 10.0  # how long to wait for a lease database another process holds
LOCK_TIMEOUT = 10.0  # how long to wait for a lock file (bridges, routes) another holds
HOOK_TIMEOUT = 10.0  # how long an --up/--down hook may run
MAX_HOOK_TIMEOUT = 300.0
TAKEOVER_WAIT = 5.0  # how long a new session waits for the one it replaces to end

# The most one packet of each kind an OpenSSH channel carries: sshd and ssh read a
# tun/tap packet into a 16 KiB buffer (CHAN_RBUF), and a tun packet also carries a
# 4-byte address family in the channel, a tap frame its 14-byte Ethernet header.
# One byte more and every full-size packet is silently dropped. Per-packet cost
# dominates the tunnel's throughput, so the default is the largest that works.
MAX_MTU = {"tun": 16380, "tap": 16370}
MIN_MTU = 576  # IPv4's minimum
IPV6_MIN_MTU = 1280  # RFC 8200: a link that carries IPv6 must carry 1280-byte packets

MAX_SESSIONS = 1000  # the most --max-sessions may be
MAX_LEASES = 65536  # a /16: more than any pool this serves
