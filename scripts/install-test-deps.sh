#!/usr/bin/env bash
# Debian packages the tests drive as real peers: logger (bsdutils), curl, openssl, and
# PostgreSQL (the tests start a throwaway server with initdb/pg_ctl; it is never left running).
# Installs only what is missing, so a prepared machine pays nothing.
set -euo pipefail
need=()
command -v logger >/dev/null 2>&1 || need+=(bsdutils)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ! { command -v initdb && command -v pg_ctl; } >/dev/null 2>&1 \
  && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's package starts a cluster of its own; the tests use their own server only.
if [[ " ${need[*]} " == *" postgresql "* ]] && command -v pg_ctlcluster >/dev/null 2>&1; then
  for conf in /etc/postgresql/*/main; do
    [ -d "$conf" ] || continue
    version=$(basename "$(dirname "$conf")")
    $sudo pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
  done
fi
