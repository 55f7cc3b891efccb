#!/bin/bash
# Test the Debian package the way admins get it: build the .deb, check it with lintian,
# install it with apt ON THIS MACHINE, then run the whole test suite with Debian's
# python3 and libraries (python3-pyroute2, -psutil, -netaddr), the end-to-end tests
# driving the installed /usr/bin/tunhelper. Meant for CI's fresh Debian 12 or 13, or a
# throwaway machine (a fresh Debian with a clean clone).
# Extra arguments go to pytest. With TUNHELPER_DEB=FILE (CI's Debian 13 run), that .deb,
# built elsewhere, is checked and tested instead of one built here: one package, both
# releases. `test-deb.sh --prepare` only installs what the run needs (CI's Debian 13 tree
# does it while Debian 12's suites run). The tests run in 4 pytest-xdist workers, as in
# tools/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "test-deb.sh: run as root (it installs the package)" >&2
    exit 1
fi
prepare_only=0
if [[ ${1:-} == --prepare ]]; then
    prepare_only=1
    shift
fi
bash tools/install.sh      # the lab's tools: sshd, ip, ping, man
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

packages=(python3-pytest python3-pytest-xdist python3-hypothesis python3-prometheus-client
    python3-psycopg postgresql lintian)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "test-deb.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
if ((prepare_only)); then
    exit 0
fi

if [[ -n ${TUNHELPER_DEB:-} ]]; then
    mkdir -p dist
    rm -f dist/tunhelper_*.deb
    cp "$TUNHELPER_DEB" dist/
    echo "test-deb.sh: testing $TUNHELPER_DEB, built elsewhere"
else
    bash tools/build-deb.sh
fi

if ! report=$(lintian --fail-on warning --pedantic dist/tunhelper_*_all.deb 2>&1); then
    echo "$report" >&2
    echo "test-deb.sh: lintian found problems (above)" >&2
    exit 1
fi

# --reinstall: the same version rebuilt from changed sources must replace the old one.
(cd dist && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall ./tunhelper_*.deb \
    >/dev/null)
libraries=$(dpkg-query -W -f='${Package} ${Version}, ' python3-pyroute2 python3-psutil python3-netaddr)
echo "test-deb.sh: installed $(dpkg-query -W -f='${Package} ${Version}' tunhelper)" \
    "with ${libraries%, } on Debian $(cat /etc/debian_version)," \
    "$(dpkg-query -W -f='${Package} ${Version}' openssh-server)"

# Debian's python3, without the checkout on sys.path ahead of the installed package:
# -P keeps the current directory out, and --import-mode=append puts the tests' root last.
export TUNHELPER_TEST_COMMAND=/usr/bin/tunhelper
exec /usr/bin/python3 -P -m pytest -p no:cacheprovider --import-mode=append -ra -n 4 "$@"
