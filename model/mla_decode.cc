// MLA's absorbed decoding form through engine ops (model/mla_decode.h).
#include "model/mla_decode.h"

#include <limits>
#include <vector>

#include "engine/error.h"

namespace r1 {

MlaLatent mla_kv_latent(const Tensor& x, const Tensor& kv_a_weight,
                        const Tensor& kv_a_norm_weight, double eps, const Tensor& positions,
                        const RopeTable& rope_table) {
  R1_CHECK(x.defined() && x.dim() == 3, "mla_kv_latent: x {} must be (B, T, hidden)",
           x.defined() ? x.str() : "undefined");
  R1_CHECK(kv_a_weight.dim() == 2 && kv_a_norm_weight.dim() == 1,
           "mla_kv_latent: kv_a_weight {}, kv_a_norm_weight {}", kv_a_weight.str(),
           kv_a_norm_weight.str());
  const int64_t B = x.size(0), T = x.size(1), L = kv_a_norm_weight.size(0);
  const int64_t rd = kv_a_weight.size(0) - L;
  R1_CHECK(rd > 0 && rd == rope_table.config.dim,
           "mla_kv_latent: kv_a_weight {} minus kv_lora_rank {} is not the rope dim {}",
           kv_a_weight.str(), L, rope_table.config.dim);
  std::vector<Tensor> ckv = split(linear(x, kv_a_weight), {L, rd}, -1);
  MlaLatent out;
  out.latent = rmsnorm(ckv[0], kv_a_norm_weight, eps);
  out.k_pe = rope(ckv[1].reshape({B, T, 1, rd}), positions, rope_table).view({B, T, rd});
  return out;
}

Tensor mla_attention_absorbed(const Tensor& q_nope, const Tensor& q_pe, const Tensor& latent,
                              const Tensor& k_pe, const Tensor& kv_b_weight, int64_t nope,
                              int64_t v_dim, double scale) {
  auto s = [](const Tensor& t) { return t.defined() ? t.str() : std::string("undefined"); };
  R1_CHECK(q_nope.defined() && q_pe.defined() && latent.defined() && k_pe.defined() &&
               kv_b_weight.defined() && q_nope.dim() == 4 && q_pe.dim() == 4 &&
               latent.dim() == 3 && k_pe.dim() == 3 && kv_b_weight.dim() == 2,
           "mla_attention_absorbed: q_nope {} q_pe {} latent {} k_pe {} kv_b_weight {} must be "
           "(B, Tq, H, nope), (B, Tq, H, rope), (B, S, L), (B, S, rope), (H*(nope+v), L)",
           s(q_nope), s(q_pe), s(latent), s(k_pe), s(kv_b_weight));
  const int64_t B = q_nope.size(0), Tq = q_nope.size(1), H = q_nope.size(2);
  const int64_t S = latent.size(1), L = latent.size(2), rd = q_pe.size(3);
  R1_CHECK(nope > 0 && v_dim > 0 && q_nope.size(3) == nope && q_pe.size(0) == B &&
               q_pe.size(1) == Tq && q_pe.size(2) == H && latent.size(0) == B &&
               k_pe.size(0) == B && k_pe.size(1) == S && k_pe.size(2) == rd &&
               kv_b_weight.size(0) == H * (nope + v_dim) && kv_b_weight.size(1) == L,
           "mla_attention_absorbed: shapes do not fit: q_nope {} q_pe {} latent {} k_pe {} "
           "kv_b_weight {} nope {} v_dim {}",
           s(q_nope), s(q_pe), s(latent), s(k_pe), s(kv_b_weight), nope, v_dim);
  R1_CHECK(Tq >= 1 && Tq <= S, "mla_attention_absorbed: {} queries over a cache of {} tokens",
           Tq, S);
  const DType dt = q_nope.dtype();
  const Device dev = q_nope.device();
  for (const Tensor* t : {&q_pe, &latent, &k_pe, &kv_b_weight})
    R1_CHECK(t->dtype() == dt && t->device() == dev,
             "mla_attention_absorbed: {} differs from q_nope {} in dtype or device", t->str(),
             q_nope.str());

  // W_UK (H, nope, L) and W_UV (H, v, L): views of kv_b_proj's rows per head.
  const Tensor w = kv_b_weight.view({H, nope + v_dim, L});
  const Tensor w_uk = w.narrow(1, 0, nope);
  const Tensor w_uv = w.narrow(1, nope, v_dim);

  // Absorb W_UK into q: (H, B*Tq, nope) @ (H, nope, L) -> (H, B*Tq, L), back to (B, Tq*H, L).
  const Tensor qn = q_nope.permute({2, 0, 1, 3}).reshape({H, B * Tq, nope});
  const Tensor q_lat = matmul(qn, w_uk)
                           .view({H, B, Tq, L})
                           .permute({1, 2, 0, 3})
                           .reshape({B, Tq * H, L});

  // Scores over the latent cache (B, Tq*H, S): the nope part against the latents, the rope
  // part against the one shared rotated key.
  const Tensor scores_lat = matmul(q_lat, latent, false, /*trans_b=*/true);
  const Tensor scores_pe = matmul(q_pe.reshape({B, Tq * H, rd}), k_pe, false, /*trans_b=*/true);
  Tensor scores = r1::scale(add(scores_lat, scores_pe), scale).view({B, Tq, H, S});

  // Causal mask with the offset: query t (position S - Tq + t) sees s <= S - Tq + t.
  if (Tq > 1) {
    std::vector<double> mask(static_cast<size_t>(Tq * S), 0.0);
    for (int64_t t = 0; t < Tq; ++t)
      for (int64_t j = S - Tq + t + 1; j < S; ++j)
        mask[static_cast<size_t>(t * S + j)] = -std::numeric_limits<double>::infinity();
    const Tensor m = Tensor::from_vector(mask, {Tq, 1, S}).to(dt).to(dev);
    scores = add(scores, m);
  }
  const Tensor p = softmax(scores).view({B, Tq * H, S});

  // Attend over the latents, then absorb W_UV into the output:
  // (H, B*Tq, L) @ (H, v, L)^T -> (H, B*Tq, v) -> (B, Tq, H, v).
  const Tensor o_lat = matmul(p, latent)  // (B, Tq*H, L)
                           .view({B, Tq, H, L})
                           .permute({2, 0, 1, 3})
                           .reshape({H, B * Tq, L});
  return matmul(o_lat, w_uv, false, /*trans_b=*/true)
      .view({H, B, Tq, v_dim})
      .permute({1, 2, 0, 3})
      .contiguous();
}

}  // namespace r1
