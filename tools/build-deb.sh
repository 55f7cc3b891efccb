#!/bin/bash
# Build the Debian package from this checkout: dist/tunhelper_VERSION_all.deb.
# Installs the build dependencies with apt if they are missing (root), and builds in a
# temporary copy of the tracked and new files, so the work tree gets nothing but dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "build-deb.sh: run as root (it installs Debian's build tools)" >&2
    exit 1
fi
# Debian's tools and Debian's Python only: a python3 from pyenv or a venv on PATH must
# not end up building the package or in its scripts.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH VIRTUAL_ENV

# debian/control's Build-Depends, as apt packages (dpkg-checkbuilddeps below checks
# that this list still covers them).
build_deps=(debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools)
missing=()
for pkg in "${build_deps[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "build-deb.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
# An arch-independent Python package needs no compiler: skip build-essential (-I).
dpkg-checkbuilddeps -I

work=$(mktemp -d /tmp/tunhelper-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/tunhelper"
git ls-files -z --cached --others --exclude-standard \
    | tar --null --ignore-failed-read -T - -cf - 2>/dev/null \
    | tar -xf - -C "$work/tunhelper"
(cd "$work/tunhelper" && dpkg-buildpackage -b -us -uc --no-check-builddeps) \
    >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2
    echo "build-deb.sh: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
mkdir -p dist
rm -f dist/tunhelper_*.deb
cp "$work"/tunhelper_*_all.deb dist/
echo "build-deb.sh: built $(ls dist/tunhelper_*_all.deb)"
