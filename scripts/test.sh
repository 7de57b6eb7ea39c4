#!/usr/bin/env bash
# Installs what the tests need (scripts/install.sh), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec .venv/bin/pytest -q "$@"
