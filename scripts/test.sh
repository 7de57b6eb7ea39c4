#!/usr/bin/env bash
# Installs what the tests need (scripts/install.sh), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
OPSBOT_EXTRAS='[test]' ./scripts/install.sh
exec .venv/bin/pytest -q "$@"
