#!/usr/bin/env bash
# Sets up, builds and runs every test (ctest over build/). Extra args go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu-env.sh
scripts/setup.sh
if [[ -x scripts/fetch-fixtures.sh ]]; then scripts/fetch-fixtures.sh; fi
ctest --test-dir "${R1_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" "$@"
