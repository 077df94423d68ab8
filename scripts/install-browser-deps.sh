#!/bin/sh
# The headless browser the OAuth2 browser test drives: Debian's chromium and chromium-driver,
# without their recommended packages. The Python side (selenium) comes with the test extra.
exec sh "$(dirname "$0")/install-missing.sh" chromium=chromium chromedriver=chromium-driver
