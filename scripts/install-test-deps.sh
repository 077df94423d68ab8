#!/usr/bin/env bash
# Debian packages the tests drive as real peers: logger (bsdutils), curl, openssl, and rsyslog
# (the oracle tests/parse/test_rsyslog_oracle.py compares notifier's syslog parsing with; the
# test starts its own rsyslogd on loopback with its own config, whatever the system one does).
# Installs only what is missing, so a prepared machine pays nothing.
set -euo pipefail
need=()
command -v logger >/dev/null 2>&1 || need+=(bsdutils)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# rsyslogd lives in /usr/sbin, off a user's PATH.
PATH="$PATH:/usr/sbin:/sbin" command -v rsyslogd >/dev/null 2>&1 || need+=(rsyslog)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
