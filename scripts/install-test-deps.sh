#!/bin/sh
# Debian packages the tests drive as real peers: logger (bsdutils), curl, openssl, and rsyslog
# (the oracle tests/parse/test_rsyslog_oracle.py compares notifier's syslog parsing with; the
# test starts its own rsyslogd on loopback with its own config, whatever the system one does).
# Installs only what is missing, so a prepared machine pays nothing.
set -- /usr/lib/*/rsyslog/lmnsd_gtls.so; [ -e "$1" ] || sh "$(dirname "$0")/install-missing.sh" lmnsd_gtls=rsyslog-gnutls  # forward tests: rsyslog over TLS
exec sh "$(dirname "$0")/install-missing.sh" logger=bsdutils curl=curl openssl=openssl \
    rsyslogd=rsyslog
