#!/bin/bash
# CI's Debian 13 (trixie) half, run as root on any Debian host (CI's is Debian 12): make
# a fresh debootstrapped trixie tree, copy a clean checkout of HEAD into it, install
# there what both install paths need, and run them, as on Debian 12: tools/test-deb.sh
# (the .deb with trixie's python3, python3-pyroute2, -psutil, -netaddr and OpenSSH 10's
# split sshd: the whole suite) and tools/test.sh (the README's install and test commands
# in a venv with PyPI's latest libraries: the tests marked `installation` or
# `libraries`; the whole suite runs that way on Debian 12). Everything it mounts and makes is removed at the
# end, on failure too. Usage: bash tools/ci-trixie.sh [--wait-for FILE] [DEB]: with DEB
# (a .deb built elsewhere, e.g. on Debian 12), the .deb path installs and tests that
# very file, so one package is proved on both releases; without it, the tree builds its
# own. With --wait-for FILE, the tree is made and prepared at once, and the suites start
# when FILE exists (CI's Debian 12 suites run meanwhile); FILE then names DEB (or is
# empty); run `ci-trixie.sh --host-tools` first, as the host's apt is then busy with
# Debian 12's suites. Each suite's output goes to ci-logs/trixie-{venv,deb}.log too;
# the last lines name each suite's counts and durations.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

if [[ $(id -u) -ne 0 ]]; then
    echo "ci-trixie.sh: run as root (debootstrap, chroot, mounts)" >&2
    exit 1
fi
install_debootstrap() {
    if ! command -v debootstrap >/dev/null; then
        echo "ci-trixie.sh: installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            debootstrap >/dev/null
    fi
}
# --host-tools: only what this script needs from the host's apt, so that it can then run
# alongside Debian 12's suites, which use the host's apt themselves (one lock).
if [[ ${1:-} == --host-tools ]]; then
    install_debootstrap
    exit 0
fi
go=
if [[ ${1:-} == --wait-for ]]; then
    go=$2
    shift 2
fi
deb=${1:-}
check_deb() {
    if [[ -n $deb && ! -f $deb ]]; then
        echo "ci-trixie.sh: no such .deb: $deb" >&2
        exit 1
    fi
}
check_deb
install_debootstrap
# The mirror this host's apt uses (deb822 or one-line sources), else Debian's own.
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v security | head -1 || true)
if [[ -z $mirror ]]; then
    mirror=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' \
        /etc/apt/sources.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d /var/tmp/tunhelper-trixie.XXXXXX)
# mktemp makes the tree 0700; postgres and nobody must be able to reach into it
chmod 755 "$root"
logs=$PWD/ci-logs
mkdir -p "$logs"

cleanup() {
    local status=$?
    set +e
    # Anything still running in the tree (a lab's sshd after a crash): by pid, ours only.
    local pid
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        if [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$root" ]]; then
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    # Namespaces the suites made are files under the tree's private /run: gone with it.
    local m
    for m in $(awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' \
        /proc/self/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
    if awk -v r="$root" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/self/mounts
    then
        echo "ci-trixie.sh: mounts left under $root; not removing it" >&2
    else
        rm -rf --one-file-system "$root"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$SECONDS
echo "ci-trixie.sh: debootstrap trixie from $mirror into $root"
if ! debootstrap --variant=minbase --include=python3,python3-venv,git,ca-certificates \
    trixie "$root" "$mirror" >"$logs/trixie-debootstrap.log" 2>&1; then
    tail -20 "$logs/trixie-debootstrap.log" >&2
    echo "ci-trixie.sh: debootstrap failed (log above)" >&2
    exit 1
fi
echo "ci-trixie.sh: trixie tree ready in $((SECONDS - started)) s:" \
    "Debian $(cat "$root/etc/debian_version")"

# What the suites need from the host: the tree's root as a mount point of its own
# ('ip netns exec' remounts / as a slave and /sys for the namespace, which fails on a
# plain directory), the kernel's views, devices (/dev/net/tun), ptys, and a private
# /run (ip netns keeps its namespaces in /run/netns).
mount --bind "$root" "$root"
for m in proc sys dev dev/pts; do
    mount --bind "/$m" "$root/$m"
done
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
# Daemons must not start in the tree when their packages are installed.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

# A clean checkout: HEAD, nothing of the work tree's own state (.venv, dist, caches).
git clone -q "$PWD" "$root/root/project"

in_tree() {
    chroot "$root" /usr/bin/env -i HOME=/root CI=true LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt ${deb_inside:+TUNHELPER_DEB=$deb_inside} \
        /bin/bash -c "cd /root/project && $1"
}

# Both paths' packages and the venv, once: the suites' own install steps then only check.
t0=$SECONDS
echo "ci-trixie.sh: installing both paths' packages and the venv in the tree"
if ! in_tree "bash tools/install.sh && bash tools/test-deb.sh --prepare" \
    >"$logs/trixie-prepare.log" 2>&1; then
    tail -20 "$logs/trixie-prepare.log" >&2
    echo "ci-trixie.sh: preparing the tree failed (log above)" >&2
    exit 1
fi
echo "ci-trixie.sh: tree prepared in $((SECONDS - t0)) s"
if [[ -n $go ]]; then
    t0=$SECONDS
    while [[ ! -e $go ]]; do
        if ! kill -0 "$PPID" 2>/dev/null; then
            echo "ci-trixie.sh: whoever was to start the suites is gone" >&2
            exit 1
        fi
        sleep 1
    done
    deb=$(cat "$go")
    check_deb
    echo "ci-trixie.sh: waited $((SECONDS - t0)) s for the go (${deb:-no .deb: builds its own})"
fi
if [[ -n $deb ]]; then
    mkdir -p "$root/root/prebuilt"
    cp "$deb" "$root/root/prebuilt/"
    deb_inside=/root/prebuilt/$(basename "$deb")
fi

status=0
t0=$SECONDS
echo "ci-trixie.sh: [trixie deb] bash tools/test-deb.sh"
in_tree "bash tools/test-deb.sh" 2>&1 | tee "$logs/trixie-deb.log" || status=1
deb_time=$((SECONDS - t0))
t0=$SECONDS
echo "ci-trixie.sh: [trixie venv] bash tools/test.sh -m 'installation or libraries'"
in_tree "bash tools/test.sh -m 'installation or libraries'" 2>&1 | tee "$logs/trixie-venv.log" || status=1
venv_time=$((SECONDS - t0))

counts() { grep -sE '^=+ .*(passed|failed|error).* in [0-9.]+s' "$1" | tail -1 | grep . || echo "no summary"; }
echo "ci-trixie.sh: trixie deb  ($((deb_time / 60)) m $((deb_time % 60)) s): $(counts "$logs/trixie-deb.log")"
echo "ci-trixie.sh: trixie venv ($((venv_time / 60)) m $((venv_time % 60)) s): $(counts "$logs/trixie-venv.log")"
echo "ci-trixie.sh: $((SECONDS - started)) s in all"
exit "$status"
