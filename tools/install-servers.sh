#!/usr/bin/env bash
# Install the OpenSSH server/client and nginx used by the transport tests (tests/servers.py),
# and Chromium with its WebDriver for the status page's browser tests (tests/test_web.py).
# Silent when all are already present. Meant for Debian 12, run as root.
# The tests start their own loopback-only instances; the packages' system services are not
# wanted, so a temporary policy-rc.d stops apt from starting them (sshd on :22, nginx on :80).
set -euo pipefail
if [ -x /usr/sbin/sshd ] && [ -x /usr/sbin/nginx ] && [ -x /usr/bin/chromium ] \
    && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    openssh-server openssh-client nginx-light chromium chromium-driver fonts-dejavu-core
}
install || { apt-get update -qq && install; }
