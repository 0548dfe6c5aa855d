#!/usr/bin/env bash
# Install the Debian packages the local cluster needs (root). Skips apt entirely when all are
# present, so a warm machine pays nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pkgs=(openssl iproute2 curl ca-certificates)
if [ -f "$here/node/apt-packages.txt" ]; then
  while read -r p; do [ -n "${p%%#*}" ] && pkgs+=("${p%%#*}"); done < "$here/node/apt-packages.txt"
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then echo "[deps] all present"; exit 0; fi
echo "[deps] installing: ${missing[*]}"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
