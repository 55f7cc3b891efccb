#!/bin/bash
# Install what tunhelper, its tests and its demo need on Debian 12 or 13, and the project
# itself into ./.venv (editable). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

# systemd only for systemd-analyze, which scores the units' hardening (a minimal
# Debian has no systemd; nothing is booted or started)
packages=(openssh-server openssh-client iproute2 iputils-ping python3-venv iperf3 man-db nftables
    postgresql systemd)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "install.sh: installing ${missing[*]}"
    # The lab runs its own sshd in a namespace: keep apt from starting the system's
    # one, unless the admin already has a policy of their own.
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((added_policy)); then rm -f "$policy"; fi
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,pg]'
echo "install.sh: tunhelper $(.venv/bin/tunhelper --version | cut -d' ' -f2) in $(pwd)/.venv"
