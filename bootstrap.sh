#!/bin/sh
# First command on a fresh Debian host: installs what the tooling itself needs (make, Python venv),
# creates the pinned Python environment and rolls out the simulation stack on this host.
# Everything else (Docker Engine, Swarm, images, stack) is done by Ansible: see playbooks/site.yml.
set -eu
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap.sh: run as root (sudo ./bootstrap.sh): it installs packages and Docker" >&2
  exit 1
fi

missing=""
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing python3-venv"
if [ -n "$missing" ]; then
  echo "bootstrap.sh: installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

exec make site "$@"
