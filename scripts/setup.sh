#!/usr/bin/env bash
# setup.sh — installs what a fresh Debian/Ubuntu machine lacks to build and test ftc:
# a C compiler, CMake, pkg-config and the jansson JSON library. The CUDA toolkit is
# optional (found by CMake when present; ftrun then probes for a GPU at run time).
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists jansson 2>/dev/null || need+=(libjansson-dev)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
echo "setup: build dependencies present"
