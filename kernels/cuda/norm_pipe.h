// RMSNorm forward and backward with the rows streamed through shared memory by the copy
// engine (kernels/cuda/norm_pipe.cu): an A/B variant of norm_act.cu's kernels, on with
// R1_ROW_PIPE=1 (read once). Each call returns false, having done nothing, where the variant
// is off or does not apply (unaligned rows, too little shared memory, too many chunks per
// thread); the caller then runs its own kernel. Where it runs it gives the same bits as
// norm_act.cu's kernel at the same threads per row `tpr`.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace r1::cuda {

bool row_pipe_enabled();
// Tests: force the variant on (1) or off (0), or back to R1_ROW_PIPE (-1); and how many
// pipelined forward or backward launches this process made (so a test can tell that the
// variant ran).
void set_row_pipe(int mode);
int64_t row_pipe_launches(bool backward);

// x (N, D), w (D) -> y (N, D), rstd (N) f32; checked by the caller.
bool rmsnorm_forward_pipe(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                          Tensor& rstd, int tpr);

// x, dy (N, D), w (D), rstd (N) -> dx (N, D) and partial (ceil(N / rows), D) f32: row block b's
// sum over its rows of dy x rstd, in row order; checked by the caller.
bool rmsnorm_backward_pipe(const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor& dy, Tensor& dx, Tensor& partial, int64_t rows,
                           int tpr);

}  // namespace r1::cuda
