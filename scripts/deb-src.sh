#!/usr/bin/env bash
# Adds Debian's source suite SUITE (deb-src only) to apt's sources, once, so that
# `apt-get source PACKAGE/SUITE` works: used for pgvector (trixie) and PostgreSQL 18 (sid).
#
#   scripts/deb-src.sh trixie
set -euo pipefail
SUITE="${1:?usage: deb-src.sh SUITE}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
src_list="/etc/apt/sources.list.d/pg-plm-$SUITE-src.sources"
[ -f "$src_list" ] && exit 0
printf '\033[1;34m[deb-src]\033[0m adding Debian'"'"'s %s source suite (deb-src only)\n' "$SUITE" >&2
printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$SUITE" |
  $SUDO tee "$src_list" >/dev/null
$SUDO apt-get update -qq
