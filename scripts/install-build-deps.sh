#!/usr/bin/env bash
# Installs what building the Rust workspace needs beyond Rust, idempotently: the core's software
# codec path links Debian's libvpx (VP8), found through pkg-config; the core's Opus is built from
# its bundled source with cmake (and a C compiler); OpenH264 (software H.264) from the source its
# crate bundles, with a C++ compiler; the TURN tests run
# Debian's coturn (`turnserver`), the production TURN server, and need iproute2 (`ip`, `tc`) for
# their network namespaces; the multi-node signaling tests run Debian's redis-server. Safe to run again.
set -euo pipefail
missing=()
for package in pkg-config libvpx-dev cmake g++ coturn iproute2 redis-server; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
