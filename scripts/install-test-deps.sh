#!/bin/sh
# Debian packages the tests drive as real peers: logger (bsdutils), curl, openssl, rsyslog (the
# oracle tests/parse/test_rsyslog_oracle.py compares notifier's syslog parsing with, and a
# forward target, over TLS too), swaks (a client of the SMTP relay tests; its STARTTLS needs
# libnet-ssleay-perl, which swaks only recommends), and PostgreSQL (the tests start a throwaway server with
# initdb/pg_ctl; it is never left running). Installs only what is missing, so a prepared machine
# pays nothing.
set -eu
here=$(dirname "$0")
sh "$here/install-missing.sh" logger=bsdutils curl=curl openssl=openssl rsyslogd=rsyslog \
    swaks=swaks,libnet-ssleay-perl
# Neither is a command on PATH: look for the files themselves.
set -- /usr/lib/*/rsyslog/lmnsd_gtls.so
[ -e "$1" ] || sh "$here/install-missing.sh" lmnsd_gtls=rsyslog-gnutls
set -- /usr/lib/postgresql/*/bin/initdb
if [ ! -e "$1" ] && ! command -v initdb >/dev/null 2>&1; then
    sh "$here/install-missing.sh" initdb=postgresql
    # Debian's package starts a cluster of its own; the tests use their own server only.
    for conf in /etc/postgresql/*/main; do
        [ -d "$conf" ] || continue
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO pg_ctlcluster "$(basename "$(dirname "$conf")")" main stop >/dev/null 2>&1 || true
    done
fi
