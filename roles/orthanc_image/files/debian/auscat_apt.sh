#!/bin/sh
# Installs pinned Debian packages with every update of the image's archives, in an image build.
#   auscat_apt.sh install NAME[=VERSION]...
# Refreshes the package lists (any archive that cannot be read fails the build), checks that each pinned
# version is in the archives, installs, holds the pinned packages and applies every pending update.
# A failure prints one line starting with "AUSCAT:" that names the archive or the package.
set -eu

APT="apt-get -q -o Dpkg::Use-Pty=0"
export DEBIAN_FRONTEND=noninteractive

archives() {
  grep -h '^URIs:\|^Suites:' /etc/apt/sources.list.d/*.sources | paste -d' ' - - | sed 's/URIs: //; s/ Suites:/,/'
}

refresh() {
  if ! $APT update --error-on=any >/tmp/auscat-apt-update.log 2>&1; then
    cat /tmp/auscat-apt-update.log >&2
    failed=$(sed -nE 's#^E: Failed to fetch (https?://[^ ]+)/dists/([^/ ]+)/[^ ]* +(.*)$#\1 \2 (\3)#p' \
      /tmp/auscat-apt-update.log | sort -u)
    if [ -n "$failed" ]; then
      printf '%s\n' "$failed" | while read -r url suite reason; do
        echo "AUSCAT: The Debian archive $url $suite cannot be read $reason." >&2
      done
    else
      echo "AUSCAT: apt-get update failed for the archives $(archives | paste -sd';' -)." >&2
    fi
    exit 1
  fi
  rm -f /tmp/auscat-apt-update.log
}

check() {
  missing=0
  for spec in "$@"; do
    case "$spec" in
      *=*) name=${spec%%=*} version=${spec#*=} ;;
      *) name=$spec version= ;;
    esac
    known=$(apt-cache madison "$name" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | sort -u | paste -sd' ' -)
    if [ -z "$known" ]; then
      echo "AUSCAT: Package $name is in none of the archives $(archives | paste -sd';' -)." >&2
      missing=1
    elif [ -n "$version" ] && ! printf '%s\n' $known | grep -qxF "$version"; then
      echo "AUSCAT: Package $name $version is in none of the archives $(archives | paste -sd';' -); they have $known." >&2
      missing=1
    fi
  done
  [ "$missing" -eq 0 ]
}

install_packages() {
  refresh
  check "$@"
  $APT install -y --no-install-recommends "$@"
  pinned=$(printf '%s\n' "$@" | grep = | sed 's/=.*//' || true)
  [ -z "$pinned" ] || apt-mark hold $pinned >/dev/null
  $APT full-upgrade -y
  $APT clean
  rm -rf /var/lib/apt/lists/*
}

command=${1:-}
[ "$#" -gt 0 ] && shift
case "$command" in
  install) install_packages "$@" ;;
  *) echo "usage: auscat_apt.sh install NAME[=VERSION]..." >&2; exit 2 ;;
esac
