#!/bin/bash
# Run the whole test suite, the end-to-end tests with a real sshd included, and the
# linter. Installs first (see install.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
.venv/bin/ruff check --no-cache .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -p no:cacheprovider -ra "$@"
