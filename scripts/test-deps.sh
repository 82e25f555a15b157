#!/usr/bin/env bash
# Installs the real components the tests run against, from Debian's packages:
# Prometheus Alertmanager, PostgreSQL, and Chromium (with CJK fonts) for the
# browser tests. Needs root; elsewhere it says what is missing and the tests
# that need it skip.
set -euo pipefail
want=()
command -v prometheus-alertmanager >/dev/null 2>&1 || want+=(prometheus-alertmanager)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want+=(postgresql)
command -v chromium >/dev/null 2>&1 || want+=(chromium fonts-noto-cjk)
if [ ${#want[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "not root: tests needing ${want[*]} will skip (install them with apt-get)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
# Debian starts services from packages where it can; the tests start their own.
service postgresql stop >/dev/null 2>&1 || true
service prometheus-alertmanager stop >/dev/null 2>&1 || true
