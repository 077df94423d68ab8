#!/bin/sh
# Debian packages the tests drive as real peers: logger (bsdutils), curl, openssl.
# Installs only what is missing, so a prepared machine pays nothing.
exec sh "$(dirname "$0")/install-missing.sh" logger=bsdutils curl=curl openssl=openssl
