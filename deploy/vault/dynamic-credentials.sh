#!/usr/bin/env bash
# Vault / OpenBao set-up for opsbot's credentials that die with the action (README.md,
# "Credentials"). Idempotent; the test suite runs it against its own OpenBao.
#
# Needs VAULT_ADDR and a VAULT_TOKEN allowed to mount engines and write policies and roles.
# Each part runs when its variables are set:
#   Redis       REDIS_HOST REDIS_PORT REDIS_ADMIN_PASSWORD [REDIS_ADMIN_USER=default]
#   PostgreSQL  POSTGRES_HOST POSTGRES_PORT POSTGRES_ADMIN_USER POSTGRES_ADMIN_PASSWORD
#               [POSTGRES_DB=postgres] [POSTGRES_SSLMODE=require]
#   SSH         OPSBOT_SSH=1 (writes the CA's public key to stdout, for sshd's TrustedUserCAKeys)
# VAULT_CLI picks the client (default `vault`; `bao` for OpenBao).
set -euo pipefail
cli=${VAULT_CLI:-vault}
export BAO_ADDR=${BAO_ADDR:-${VAULT_ADDR:?set VAULT_ADDR}} BAO_TOKEN=${BAO_TOKEN:-${VAULT_TOKEN:?set VAULT_TOKEN}}
here=$(cd "$(dirname "$0")" && pwd)

mounted() { local mounts; mounts=$("$cli" secrets list -format=json); [[ $mounts == *"\"$1/\""* ]]; }
enable() { mounted "$1" || "$cli" secrets enable -path="$1" "$2" >&2; }

# opsbot's own token: per-action policies, child tokens, lease revocation. Then create it with
#   $cli token create -policy=opsbot -period=24h      (and put it in VAULT_TOKEN for opsbot)
"$cli" policy write opsbot "$here/opsbot-policy.hcl" >&2

if [ -n "${REDIS_HOST:-}" ]; then
  enable database database
  "$cli" write database/config/redis plugin_name=redis-database-plugin \
    host="$REDIS_HOST" port="$REDIS_PORT" username="${REDIS_ADMIN_USER:-default}" \
    password="$REDIS_ADMIN_PASSWORD" allowed_roles="opsbot-redis-read,opsbot-redis-write" >&2
  for access in read write; do
    "$cli" write "database/roles/opsbot-redis-$access" db_name=redis default_ttl=10m \
      max_ttl=1h creation_statements=@"$here/redis-$access.json" >&2
  done
fi

if [ -n "${POSTGRES_HOST:-}" ]; then
  enable database database
  url="postgresql://{{username}}:{{password}}@$POSTGRES_HOST:$POSTGRES_PORT/${POSTGRES_DB:-postgres}"
  "$cli" write database/config/postgres plugin_name=postgresql-database-plugin \
    connection_url="$url?sslmode=${POSTGRES_SSLMODE:-require}" \
    username="$POSTGRES_ADMIN_USER" password="$POSTGRES_ADMIN_PASSWORD" \
    allowed_roles="opsbot-postgres-read,opsbot-postgres-write" >&2
  for access in read write; do
    "$cli" write "database/roles/opsbot-postgres-$access" db_name=postgres default_ttl=10m \
      max_ttl=1h creation_statements=@"$here/postgres-$access.sql" \
      revocation_statements=@"$here/postgres-revoke.sql" >&2
  done
fi

if [ -n "${OPSBOT_SSH:-}" ]; then
  enable ssh ssh
  "$cli" read ssh/config/ca >/dev/null 2>&1 || "$cli" write ssh/config/ca generate_signing_key=true key_type=ed25519 >&2
  "$cli" write ssh/roles/opsbot key_type=ca allow_user_certificates=true \
    allowed_users="opsbot-observe,opsbot-recommend,opsbot-draft,opsbot-sandbox-execute,opsbot-production" \
    ttl=5m max_ttl=1h >&2
  "$cli" read -field=public_key ssh/config/ca
fi
