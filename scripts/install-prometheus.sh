#!/usr/bin/env bash
# Makes the Debian package's `prometheus` and `promtool` available (apt-get; no service is started). Idempotent.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi

SUDO=""
if [[ "$(id -u)" != 0 ]]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package's postinst may start a service where an init system runs; nothing here relies on it.
prometheus --version 2>&1 | head -n 1
