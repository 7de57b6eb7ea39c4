#!/usr/bin/env bash
# Installs opsbot and starts it: in Slack when SLACK_BOT_TOKEN is set (see README), otherwise
# the terminal console. Without REDIS_URL it starts a local Redis so the console has something
# to look at.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
if [ -z "${REDIS_URL:-}" ] && ! grep -qs '^REDIS_URL=' .env; then
  mkdir -p .opsbot
  if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
    redis-server --port 6379 --bind 127.0.0.1 --save '' --daemonize yes \
      --logfile "$PWD/.opsbot/redis.log" --dir "$PWD/.opsbot" >/dev/null
  fi
  export REDIS_URL=redis://127.0.0.1:6379/0
fi
if [ ! -d .opsbot/qdrant ]; then
  .venv/bin/opsbot runbooks ingest runbooks/ || true
fi
exec .venv/bin/opsbot serve
