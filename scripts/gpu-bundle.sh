#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), everything scripts/gpu-check.sh runs on a GPU
# machine, into one self-contained folder:
#
#   .gpu-bundle/bin/   every test with CUDA cases, the kernel benchmarks
#                      (bench_cuda_kernels, bench_fp8_gemm), r1-toy-lm, r1-pretrain and
#                      r1-grpo, for sm_90a
#   .gpu-bundle/base/  the tiny R1-Zero base (config.json, model.safetensors, tokenizer.json)
#                      and its held-out set, from runs/r1-zero (scripts/r1-zero.sh) or
#                      $R1_GPU_BASE: gpu-check runs a few GRPO steps from it on CUDA and CPU
#   .gpu-bundle/lib/   every shared library they need beyond glibc and the CUDA toolkit
#                      (OpenBLAS, libgfortran, fmt, gomp, ...), copied from this machine
#   .gpu-bundle/MANIFEST  the commit, the build flags and each file's checksum
#   .gpu-bundle.tar.xz    all of it in one archive, the thing to carry (gpu-check.sh unpacks)
#
# Why a bundle: the GPU machines have nvcc, CMake and Python but none of Debian's -dev
# packages and no network, and their time is scarce (minutes per session); compiling there
# would spend it. libstdc++ and libgcc are linked statically so the binaries do not depend
# on the GPU machine's compiler; glibc is the GPU machine's own (built against Debian 12's
# 2.36, so any newer glibc runs them); cudart is static; cuBLASLt comes from the GPU
# machine's /usr/local/cuda (same major version, 13).
#
# Usage: scripts/gpu-bundle.sh            (then carry .gpu-bundle.tar.xz to the GPU machine)
# Env:   R1_GPU_BUILD_DIR (default build-gpu)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --no-build
build_dir=${R1_GPU_BUILD_DIR:-build-gpu}
bundle=.gpu-bundle

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DR1_CUDA=ON \
  -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" >/dev/null
# Every test binary with CUDA cases (its source uses R1_SKIP_WITHOUT_CUDA), the GPU
# benchmarks and the toy LM.
mapfile -t targets < <({
  grep -l R1_SKIP_WITHOUT_CUDA tests/test_*.cc tests/*/test_*.cc 2>/dev/null |
    xargs -n1 basename | sed 's/\.cc$//'
  echo bench_cuda_kernels; echo bench_fp8_gemm; echo r1-fp8-tune; echo r1-toy-lm; echo r1-grpo
  echo r1-pretrain
  echo bench_rl
} | sort -u)
((${#targets[@]})) || { echo "gpu-bundle: no CUDA targets found in $build_dir" >&2; exit 1; }
echo "gpu-bundle: building ${targets[*]}"
cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}"

rm -rf "$bundle.tmp"
mkdir -p "$bundle.tmp/bin" "$bundle.tmp/lib"
for t in "${targets[@]}"; do
  cp "$build_dir/bin/$t" "$bundle.tmp/bin/"
  strip --strip-debug "$bundle.tmp/bin/$t"
done
# Shared libraries: everything ldd resolves except glibc's own and the CUDA toolkit's.
glibc='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv)\.so'
for t in "${targets[@]}"; do
  ldd "$build_dir/bin/$t" | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ "$name" =~ $glibc ]] && continue
  [[ "$path" == /usr/local/cuda* ]] && continue
  cp -L "$path" "$bundle.tmp/lib/$name"
done
base=${R1_GPU_BASE:-runs/r1-zero/base/checkpoint}
held=${R1_GPU_HELDOUT:-runs/r1-zero/heldout.jsonl}
if [[ -f $base/model.safetensors && -f $held ]]; then
  mkdir -p "$bundle.tmp/base"
  cp "$base/config.json" "$base/model.safetensors" "$base/tokenizer.json" "$held" "$bundle.tmp/base/"
else
  echo "gpu-bundle: no base checkpoint at $base (run scripts/r1-zero.sh first): gpu-check will skip its GRPO step"
fi
{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "nvcc $(/usr/local/cuda/bin/nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
  # (base/ only when there is one: find's error on a missing folder would end the script)
  (cd "$bundle.tmp" && find bin lib $([[ -d base ]] && echo base) -type f | sort | xargs sha256sum)
} >"$bundle.tmp/MANIFEST"
rm -rf "$bundle"
mv "$bundle.tmp" "$bundle"
# The same as one xz archive: what travels to the GPU machine (carry takes 64 MiB in all).
# Every binary links the whole CUDA kernel library, so ~20 MB of each is the same device code:
# one xz stream (-T1: threads would cut it into independent blocks) with a dictionary larger
# than the whole bundle finds each copy after the first. Measured 2026-12-01: 512 MB of
# binaries and libraries -> 25 MB in 3.5 minutes on 2 cores (the default 8 MiB dictionary,
# multithreaded: 62 MB); unpacking needs 512 MiB of memory and seconds.
tar -cf - "$bundle" | xz -T1 --lzma2=preset=6,dict=512MiB >"$bundle.tar.xz.tmp" &&
  mv "$bundle.tar.xz.tmp" "$bundle.tar.xz"
echo "gpu-bundle: $(du -sh "$bundle" | cut -f1) in $bundle/ ($(ls "$bundle/bin" | wc -l) binaries," \
  "$(ls "$bundle/lib" | wc -l) libraries), $(du -h "$bundle.tar.xz" | cut -f1) as $bundle.tar.xz"
size=$(stat -c %s "$bundle.tar.xz")
if ((size > 56 * 1024 * 1024)); then
  echo "gpu-bundle: warning: $bundle.tar.xz is $((size / 1024 / 1024)) MiB: with the working tree" \
    "it may not fit the device tool's 64 MiB carry limit" >&2
fi
