#!/bin/bash
# Run the whole test suite, the end-to-end tests with a real sshd included, and the
# linter. Installs first (see install.sh). Extra arguments go to pytest, after ours:
# e.g. `-n 0` runs the tests one at a time, `tests/test_pool.py` only that file.
# The tests run side by side in 4 pytest-xdist workers: most of the suite waits (sshd
# handshakes, timeouts, sessions ending), so 4 fill 2 cores. Every lab has names,
# namespaces, directories and a PostgreSQL of its own (tests/lab.py, tests/pg.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
.venv/bin/ruff check --no-cache .
.venv/bin/ruff format --check --no-cache .
exec .venv/bin/python -m pytest -p no:cacheprovider -ra -n 4 "$@"
