#!/usr/bin/env bash
# Install the Debian packages the local cluster needs (root). Skips apt entirely when all are
# present, so a warm machine pays nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pkgs=(openssl iproute2 curl ca-certificates)
# the real node's, then the Docker engine's and the image base's (e2e/docker)
for list in "$here/node/apt-packages.txt" "$here/../docker/apt-packages.txt"; do
  [ -f "$list" ] || continue
  while read -r p; do [ -n "${p%%#*}" ] && pkgs+=("${p%%#*}"); done < "$list"
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then echo "[deps] all present"; exit 0; fi
echo "[deps] installing: ${missing[*]}"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
