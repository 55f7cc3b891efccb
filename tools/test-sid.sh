#!/bin/bash
# Before a release: the whole suite in a fresh Debian sid (unstable) tree, which ships
# today what the next stable release will (December 2026: OpenSSH 10.6p1, Python 3.14,
# nftables 1.1, python3-pyroute2 0.8). Run as root on a Debian host; it changes nothing
# outside the tree it makes and removes (on failure too), except dist/ and ci-logs/.
# Both install paths run, as CI runs them on Debian 12 and 13: tools/test.sh (a venv
# with PyPI's latest libraries) and tools/test-deb.sh (the .deb, with sid's python3 and
# its python3-pyroute2, -psutil, -netaddr). The .deb is the one built HERE by
# tools/build-deb.sh (on CI's Debian 12: the package users get), or DEB if given, so one
# package is proved on sid too. Not part of .ci/run: it takes as long as one CI release.
#   bash tools/test-sid.sh [--deb DEB] [--only venv|deb] [PYTEST ARGUMENTS...]
# Logs: ci-logs/sid-{debootstrap,venv,deb}.log; the last lines give the versions found in
# the tree and each path's counts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
suite=sid

deb='' only=''
while (($#)); do
    case $1 in
    --deb) deb=$(realpath "$2") && shift 2 ;;
    --only) only=$2 && shift 2 ;;
    *) break ;;
    esac
done
pytest_args=''
if (($#)); then pytest_args=$(printf ' %q' "$@"); fi
if [[ $(id -u) -ne 0 ]]; then
    echo "test-sid.sh: run as root (debootstrap, chroot, mounts)" >&2
    exit 1
fi
if [[ -n $deb && ! -f $deb ]]; then
    echo "test-sid.sh: no such .deb: $deb" >&2
    exit 1
fi
if [[ -n $only && $only != venv && $only != deb ]]; then
    echo "test-sid.sh: --only venv or --only deb" >&2
    exit 1
fi
if [[ $only != venv && -z $deb ]]; then
    bash tools/build-deb.sh
    deb=$(realpath dist/tunhelper_*_all.deb)
fi
if ! command -v debootstrap >/dev/null; then
    echo "test-sid.sh: installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        debootstrap >/dev/null
fi
# The mirror this host's apt uses (deb822 or one-line sources), else Debian's own.
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v security | head -1 || true)
if [[ -z $mirror ]]; then
    mirror=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' \
        /etc/apt/sources.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d "/var/tmp/tunhelper-$suite.XXXXXX")
chmod 755 "$root" # postgres and nobody must be able to reach into it
logs=$PWD/ci-logs
mkdir -p "$logs"

cleanup() {
    local status=$?
    set +e
    local pid m # anything still running in the tree (a lab's sshd after a crash)
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$root" ]] && kill -KILL "$pid" 2>/dev/null
    done
    for m in $(awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' \
        /proc/self/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
    if awk -v r="$root" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/self/mounts
    then
        echo "test-sid.sh: mounts left under $root; not removing it" >&2
    else
        rm -rf --one-file-system "$root"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$SECONDS
echo "test-sid.sh: debootstrap $suite from $mirror into $root"
if ! debootstrap --variant=minbase --include=python3,python3-venv,git,ca-certificates \
    "$suite" "$root" "$mirror" >"$logs/sid-debootstrap.log" 2>&1; then
    tail -20 "$logs/sid-debootstrap.log" >&2
    echo "test-sid.sh: debootstrap failed (log above)" >&2
    exit 1
fi
# sid's Release file is short-lived: a mirror that is a snapshot serves an expired one.
echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99tunhelper-snapshot"
echo "test-sid.sh: tree ready in $((SECONDS - started)) s: Debian $(cat "$root/etc/debian_version")"

# The tree's root as a mount point of its own ('ip netns exec' remounts / as a slave),
# the kernel's views, devices (/dev/net/tun), ptys, and a private /run (/run/netns).
mount --bind "$root" "$root"
for m in proc sys dev dev/pts; do
    mount --bind "/$m" "$root/$m"
done
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" # no daemon starts in the tree
chmod 755 "$root/usr/sbin/policy-rc.d"

git clone -q "$PWD" "$root/root/project" # HEAD, without the work tree's .venv or dist
commit=$(git -C "$root/root/project" rev-parse --short HEAD)
if [[ -n $deb ]]; then
    mkdir -p "$root/root/prebuilt"
    cp "$deb" "$root/root/prebuilt/"
fi
in_tree() {
    chroot "$root" /usr/bin/env -i HOME=/root CI=true LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        ${deb:+TUNHELPER_DEB=/root/prebuilt/$(basename "$deb")} \
        /bin/bash -c "cd /root/project && $1"
}

status=0
counts() { grep -sE '^=+ .*(passed|failed|error).* in [0-9.]+s' "$1" | tail -1 | grep . || echo "no summary"; }
summary=()
for path in venv deb; do
    [[ -n $only && $only != "$path" ]] && continue
    script=tools/test.sh
    [[ $path == deb ]] && script=tools/test-deb.sh
    t0=$SECONDS
    echo "test-sid.sh: [$suite $path] bash $script$pytest_args"
    in_tree "bash $script$pytest_args" 2>&1 | tee "$logs/sid-$path.log" || status=1
    took=$((SECONDS - t0))
    summary+=("$suite $path ($((took / 60)) m $((took % 60)) s): $(counts "$logs/sid-$path.log")")
done
versions=$(in_tree "dpkg-query -W -f='\${Package} \${Version}, ' openssh-server python3 \
    nftables python3-pyroute2 python3-psutil python3-netaddr 2>/dev/null" || true)
echo "test-sid.sh: Debian $(cat "$root/etc/debian_version"), commit $commit:" \
    "${versions%, }"
printf 'test-sid.sh: %s\n' "${summary[@]}"
echo "test-sid.sh: $((SECONDS - started)) s in all"
exit "$status"
