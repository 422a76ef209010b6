#!/usr/bin/env bash
# Install what CESSNA-C needs on Debian 12 (run as root). Safe to run again.
set -euo pipefail
PKGS="build-essential pkg-config liburing-dev libxxhash-dev libzstd-dev libcriterion-dev
      zlib1g-dev libinih-dev libseccomp-dev libsodium-dev haproxy redis-server redis-tools
      gnuplot-nox libjansson-dev prometheus"
PKGS="$PKGS socat"    # docs/tutorial.md: a stand-in client and server program
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing Debian packages:$missing; run as root to install them" >&2
        exit 1
    fi
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing
    # The redis-server package starts a system instance; the tests run their own.
    (systemctl disable --now redis-server 2>/dev/null || service redis-server stop 2>/dev/null) || true
    # So does the prometheus package; the metrics test runs its own on a free port.
    (systemctl disable --now prometheus 2>/dev/null || service prometheus stop 2>/dev/null) || true
fi
