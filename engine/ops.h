// The op API: differentiable functions over Tensors, the same call for CPU and CUDA. Each op
// checks shapes (errors name the op and the shapes), makes inputs contiguous, calls the
// kernel for the device (engine/kernels.h) and records its backward on the tape.
// Float tensors of one op share one dtype; index tensors are i32 or i64.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace r1 {

// ---- matrix products -------------------------------------------------------------------
// a (..., M, K) [(..., K, M) if trans_a], b (..., K, N) [(..., N, K) if trans_b] or 2-D
// (broadcast over a's batch) -> (..., M, N). Batch dims of a and b must match otherwise.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x (..., in), w (out, in), bias (out) or undefined -> (..., out) = x @ w^T + bias.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

// ---- elementwise (NumPy broadcasting) --------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double s);        // s * x
Tensor add_scalar(const Tensor& x, double s);  // x + s
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator*(const Tensor& a, double s) { return scale(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return scale(a, s); }

// Broadcast shape of two shapes; InputError-free: throws Error naming both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b);
// Sums x down to `shape` (the reverse of broadcasting); not recorded.
Tensor sum_to_shape(const Tensor& x, const Shape& shape);

// ---- reductions ------------------------------------------------------------------------
Tensor sum(const Tensor& x);  // all elements -> shape ()
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);  // grad to the first argmax

// ---- joining and indexing --------------------------------------------------------------
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// Parts along the outermost non-unit dim of a contiguous x are views of it, else copies.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// torch.gather: index has x's rank; out[..i..] = x[.. index[..i..] (at dim) ..].
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// index (n) int -> x with dim `dim` replaced by n entries.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);

// ---- model ops -------------------------------------------------------------------------
// ids (...) int, table (V, D) -> (..., D).
Tensor embedding(const Tensor& ids, const Tensor& table);
// An activation already quantized as linear_fp8 quantizes its input: q (rows, K) e4m3 with
// scales (rows, ceil(K / 128)) f32, one per 1x128 tile (engine/ops_fp8.h).
struct Fp8Rows {
  Tensor q, scales;
};
// x (..., D), w (D) -> (..., D). With `quantized` (f32/bf16 x): also fills it with the
// output's FP8 quantization (one fused kernel, rmsnorm_quantize_fp8) for the next linear_fp8.
Tensor rmsnorm(const Tensor& x, const Tensor& w, double eps, Fp8Rows* quantized = nullptr);
// gate, up (..., F) -> silu(gate) * up. With `quantized`: also fills it with the output's
// FP8 quantization (one fused kernel, swiglu_quantize_fp8) for the next linear_fp8.
Tensor swiglu(const Tensor& gate, const Tensor& up, Fp8Rows* quantized = nullptr);
// Over the last dim.
Tensor softmax(const Tensor& x);
Tensor log_softmax(const Tensor& x);
// logits (N, V), targets (N) int -> () mean over targets != ignore_index. Vocabulary-chunked:
// keeps only the per-row logsumexp for backward, never the probabilities.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);

// Rotary position embedding with optional YaRN (DeepSeek-V3 inference/model.py semantics).
struct RopeConfig {
  int64_t dim = 64;          // rotary dims per head (even)
  double theta = 10000.0;    // rope_theta
  bool interleaved = true;   // DeepSeek: pairs (2i, 2i+1); false: Llama/Qwen halves
  // YaRN (rope_scaling.type == "yarn"); factor == 1 turns it off.
  double yarn_factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};
// YaRN's attention-temperature factor: 0.1 * mscale * ln(factor) + 1 (1 when factor <= 1).
// DeepSeek multiplies the softmax scale by yarn_mscale(factor, mscale_all_dim)^2.
double yarn_mscale(double factor, double mscale);

struct RopeTable {
  RopeConfig config;
  Tensor cos;  // (max_positions, dim/2)
  Tensor sin;
  RopeTable() = default;
  RopeTable(const RopeConfig& cfg, int64_t max_positions, DType dtype = DType::F32,
            Device dev = Device::cpu());
};
// x (B, T, H, D) with D == table.config.dim, positions (B, T) or (T) int -> (B, T, H, D).
Tensor rope(const Tensor& x, const Tensor& positions, const RopeTable& table);
// MLA's attention inputs in one op (the split + rope + concat graph, fused; kernels.h):
// q (B, T, H, n + r), kv (B, T, H, n + v), k_rope (B, T, r) with r == table.config.dim,
// positions (B, T) or (T) int -> {q (B, T, H, n + r) with its last r features rotated,
// k (B, T, H, n + r) = [kv's first n, rope(k_rope) shared by every head], v (B, T, H, v)}.
std::vector<Tensor> mla_qkv(const Tensor& q, const Tensor& kv, const Tensor& k_rope,
                            const Tensor& positions, const RopeTable& table);

}  // namespace r1
