#!/bin/bash
# Install tunhelper (see install.sh) and run a live demonstration on this machine:
# a real sshd in one network namespace, ssh -w clients in others.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
exec .venv/bin/python -m tests.demo "$@"
