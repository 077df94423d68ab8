#!/bin/sh
# Install the Debian package of each command that is missing, and nothing else.
# Usage: install-missing.sh COMMAND=PACKAGE ...   (e.g. chromedriver=chromium-driver)
# COMMAND=PACKAGE,PACKAGE also installs a package the first only recommends but the tests need.
# Recommended packages stay out (chromium alone would pull in ~100: avahi-daemon, cups, samba,
# udev, a systemd upgrade); what will be installed, dependencies included, is printed first.
set -eu
# Daemons (rsyslogd) live in /usr/sbin, off a user's PATH.
PATH="$PATH:/usr/sbin:/sbin"
missing=""
for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || missing="$missing ${pair#*=}"
done
missing=$(echo "$missing" | sed 's/,/ /g')
if [ -z "$missing" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
echo "missing:$missing; apt-get will install:"
# shellcheck disable=SC2086 # one word a package
$SUDO apt-get install --simulate --no-install-recommends $missing | sed -n 's/^Inst /  /p'
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
