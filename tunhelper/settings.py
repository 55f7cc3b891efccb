"""The forced command's settings: argv over the admin's config file, checked as a whole.

Everything a session needs to know before it starts, and nothing from the environment
(a client may have written it). Each value was checked by its option type
(:mod:`tunhelper.options`); here the options are checked against each other: families,
reservations, client networks, the bridge plan. ``tunhelper doctor`` runs the same
:func:`serve_settings` on each authorized_keys line, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunhelper import conffile, defaults, family
from tunhelper.conffile import ClientSection
from tunhelper.errors import UsageError
from tunhelper.link.bridge import BridgePlan, default_name
from tunhelper.options import DEFAULT_ROUTE, serve_parser
from tunhelper.pool import Pool
from tunhelper.store import StoreConfig


@dataclass(frozen=True)
class Settings:
    """Everything the admin configured for one authorized_keys line."""

    pool: Pool  # the primary pool: IPv4 when there is one
    state_dir: str
    wait: float
    mtu: int | None  # None: the most the device's kind of channel carries
    client: str | None
    bridge: BridgePlan
    routes: list[str] = field(default_factory=list)  # announced to the client
    client_nets: list[str] = field(default_factory=list)  # routed to the client
    dns: list[str] = field(default_factory=list)  # announced to the client
    address: str | None = None  # reserved for this key in ``pool``
    pool6: Pool | None = None  # dual stack: the IPv6 pool (``pool`` is then the IPv4 one)
    address6: str | None = None  # reserved for this key in pool6
    max_sessions: int = 1  # live sessions per client identity
    refuse_extra: bool = False  # beyond the limit: refuse the new one, not end the oldest
    up: list[str] | None = None  # hook argv
    down: list[str] | None = None  # hook argv
    hook_timeout: float = defaults.HOOK_TIMEOUT
    pool_label: str = ""  # --pool as given: a CIDR or a config file pool name
    clients: dict[str, ClientSection] = field(default_factory=dict)  # from the config file
    db_timeout: float = defaults.DB_TIMEOUT  # bounded wait for a database another process holds
    max_leases: int | None = None  # live sessions per client identity; None: no limit
    store: StoreConfig | None = None  # the config file's [store]; None: SQLite in state_dir

    @property
    def pools(self) -> list[Pool]:
        """The session's pools, the primary first."""
        return [self.pool] if self.pool6 is None else [self.pool, self.pool6]

    @property
    def v6pool(self) -> Pool | None:
        """The pool that gives the session its IPv6 address, if any."""
        return self.pool6 or (self.pool if self.pool.version == 6 else None)

    def reserved(self, pool: Pool) -> str | None:
        """The address reserved for this key in ``pool``."""
        return self.address6 if pool is self.pool6 else self.address


def serve_settings(argv: list[str]) -> Settings:
    """Every check of the forced command's arguments and config file, and its settings.

    Nothing here touches the network or the lease store.
    """
    args = serve_parser().parse_args(argv)
    named = [p for p in args.pool if "/" not in p]
    if named and len(args.pool) > 1:
        raise UsageError(
            f"--pool {named[0]} names a config file pool: give it alone, its networks "
            "come from the file"
        )
    label = args.pool[0]  # a CIDR, or the name of a [pool NAME] in the config file
    sections = []
    path = args.config or defaults.CONFIG_PATH
    if named or args.config:
        sections = conffile.read(path)
    if named:
        conffile.apply_pool(args, argv, path, sections)
    client_sections = conffile.clients(path, sections)
    # The store: this file's [store], or the default file's even when no pool comes
    # from it, so that a fleet's keys need not all say --config.
    store = conffile.store(path, sections) if sections else conffile.store_config(None)
    pool, pool6 = resolve_pools(args.pool, args.gateway, args.bridge is not None)
    pools = [p for p in (pool, pool6) if p is not None]
    versions = {p.version for p in pools}
    for name, section in client_sections.items():
        if section.applies_to(label, *(p.name for p in pools)):
            for address in section.addresses:  # a family with no pool here: not this key's
                if family.parse(address) in versions:
                    _check_address(pools, address, f"{section.where}: [client {name}]")
    if args.bridge and args.bridge_name:
        raise UsageError(
            "--bridge joins an existing bridge, --bridge-name names one tunhelper "
            "creates: give one of them"
        )
    routes = _expand_default(args.route, versions)
    reserved = by_family(args.address, "--address", pools)
    for address in args.address:
        _check_address(pools, address, "")
    for option, values in (("--route", routes), ("--client-net", args.client_net)):
        for value in values:
            check_family(option, value, pools)
    for server in args.dns:
        check_family("--dns", server, pools)
    for net in args.client_net:
        _check_client_net(net, pools, "")
    for name, section in client_sections.items():
        if section.applies_to(label, *(p.name for p in pools)):
            for net in section.client_nets:
                _check_client_net(net, pools, f"{section.where}: [client {name}]")

    if args.bridge:
        plan = BridgePlan(args.bridge, managed=False, address=None, prefixlen=pool.prefixlen)
    else:
        plan = BridgePlan(
            args.bridge_name or default_name(pool.name),
            managed=True,
            address=str(pool.gateway),
            prefixlen=pool.prefixlen,
            address6=None if pool6 is None else str(pool6.gateway),
            prefixlen6=None if pool6 is None else pool6.prefixlen,
        )
    return Settings(
        pool=pool,
        state_dir=args.state_dir,
        wait=args.wait,
        db_timeout=args.db_timeout,
        max_leases=args.max_leases,
        mtu=args.mtu,
        client=args.client,
        bridge=plan,
        address=reserved.get(pool.version),
        address6=None if pool6 is None else reserved.get(6),
        pool6=pool6,
        max_sessions=args.max_sessions,
        refuse_extra=args.refuse_extra,
        routes=routes,
        client_nets=args.client_net,
        dns=args.dns,
        up=args.up,
        down=args.down,
        hook_timeout=args.hook_timeout,
        pool_label=label,
        clients=client_sections,
        store=store,
    )


# Everything, in two halves per family: more specific than the client's own default
# route, which stays in place for the ssh connection itself (OpenVPN's def1).
_HALVES = {4: ("0.0.0.0/1", "128.0.0.0/1"), 6: ("::/1", "8000::/1")}


def _expand_default(routes: list[str], versions: set[int]) -> list[str]:
    """``--route default``: each family of the session's pools, as its two halves."""
    out: list[str] = []
    for value in routes:
        halves = (
            [h for v in sorted(versions) for h in _HALVES[v]] if value == DEFAULT_ROUTE else [value]
        )
        out.extend(h for h in halves if h not in out)
    return out


def by_family(values: list[str], option: str, pools: list[Pool]) -> dict[int, str]:
    """Match each value of a repeatable option to the pool of its family.

    A value that is not an address is left to the only pool (whose own check names it),
    or refused; two of one family, or one whose family has no pool, are refused.
    """
    out: dict[int, str] = {}
    versions = {p.version for p in pools}
    for value in values:
        version = family.parse(value)
        if version is None:
            if len(pools) > 1:
                raise UsageError(f"{option} {value!r} is not an IPv4 or IPv6 address")
            version = pools[0].version
        if version not in versions:
            raise UsageError(
                f"{option} {value} is an IPv{version} address but no --pool is IPv{version}: "
                f"give an IPv{version} --pool or drop {option} {value}"
            )
        if version in out:
            raise UsageError(
                f"{option} given twice for IPv{version} ({out[version]}, {value}): "
                "give at most one per pool"
            )
        out[version] = value
    return out


def resolve_pools(
    cidrs: list[str], gateways: list[str], gateway_optional: bool = False
) -> tuple[Pool, Pool | None]:
    """The session's pools: the primary (IPv4 when there is one) and, for dual stack,
    the IPv6 one, each with the ``--gateway`` of its family."""
    parsed = [Pool.parse(cidr, gateway_optional=True) for cidr in cidrs]
    seen: dict[int, Pool] = {}
    for p in parsed:
        if p.version in seen:
            raise UsageError(
                f"--pool given twice for IPv{p.version} ({seen[p.version].name}, {p.name}): "
                "give at most one pool of each family"
            )
        seen[p.version] = p
    chosen = by_family(gateways, "--gateway", parsed)
    pools = {p.version: Pool.parse(p.name, chosen.get(p.version), gateway_optional) for p in parsed}
    primary = pools.get(4) or pools[6]
    return primary, (pools.get(6) if 4 in pools else None)


def check_family(option: str, value: str, pools: list[Pool], where: str = "") -> None:
    """Refuse a network or address of a family the session has no address of.

    An IPv6 route on a link with no IPv6 address would take packets the link cannot
    source; better one line at configuration time than a silently dead route.
    """
    version = family.of(value)
    if version in {p.version for p in pools}:
        return
    kind = "network" if "/" in value else "address"
    example = "fd00:3::/112" if version == 6 else "192.168.3.0/24"
    prefix = f"{where}: " if where else ""
    raise UsageError(
        f"{prefix}{option} {value} is an IPv{version} {kind} but no --pool is "
        f"IPv{version}: add an IPv{version} --pool (e.g. --pool {example}) or drop it"
    )


def _check_client_net(net: str, pools: list[Pool], where: str) -> None:
    """A client network must have a pool of its family, and must not overlap one."""
    key = "client-net" if where else "--client-net"
    check_family(key, net, pools, where)
    for pool in pools:
        if pool.overlaps(net):
            prefix = f"{where}: " if where else ""
            raise UsageError(f"{prefix}{key} {net} overlaps --pool {pool.name}")


def _check_address(pools: list[Pool], address: str, where: str) -> None:
    version = family.parse(address)
    pool = next((p for p in pools if p.version == version), pools[0])
    offset = pool.offset(address)
    if (
        offset is None
        or not pool.first <= offset <= pool.last
        or (pool.gateway is not None and address == str(pool.gateway))
    ):
        prefix = f"{where}: " if where else ""
        raise UsageError(f"{prefix}--address {address} is not a client address of {pool.name}")
