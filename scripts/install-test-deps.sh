#!/bin/sh
# Debian packages the tests drive as real peers: logger (bsdutils), curl, openssl, and rsyslog
# (the oracle tests/parse/test_rsyslog_oracle.py compares notifier's syslog parsing with; the
# test starts its own rsyslogd on loopback with its own config, whatever the system one does),
# and swaks (a client of the SMTP relay tests; its STARTTLS needs libnet-ssleay-perl, which
# swaks only recommends).
# Installs only what is missing, so a prepared machine pays nothing.
exec sh "$(dirname "$0")/install-missing.sh" logger=bsdutils curl=curl openssl=openssl \
    rsyslogd=rsyslog swaks=swaks,libnet-ssleay-perl
