# Sourced by the scripts that run r1 binaries: picks OpenBLAS's kernels from the CPU's
# features when OpenBLAS would not (it reads the CPUID model, and falls back to SSE3
# "Prescott" kernels on a model it does not know, such as a KVM guest's masked one; measured
# 2x slower GEMMs than its SkylakeX kernels on such a Xeon). A value already set wins.
if [[ -z "${OPENBLAS_CORETYPE:-}" && -r /proc/cpuinfo ]]; then
  _r1_flags=" $(grep -m1 '^flags' /proc/cpuinfo) "
  if [[ $_r1_flags == *" avx512f "* && $_r1_flags == *" avx512bw "* &&
        $_r1_flags == *" avx512dq "* && $_r1_flags == *" avx512vl "* ]]; then
    export OPENBLAS_CORETYPE=SkylakeX
  elif [[ $_r1_flags == *" avx2 "* && $_r1_flags == *" fma "* ]]; then
    export OPENBLAS_CORETYPE=Haswell
  fi
  unset _r1_flags
fi
