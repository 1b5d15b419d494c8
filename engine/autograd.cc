#include "engine/autograd.h"

#include "engine/kernels.h"
#include "engine/nvtx.h"
#include "engine/ops.h"

namespace r1 {
namespace {

thread_local bool t_grad_enabled = true;
thread_local std::vector<TapeNode> t_tape;

// Whether t's buffer can be written in place: contiguous and its storage held by t alone (no
// view, saved tensor, other grad or caller shares it: they would all hold the storage).
bool exclusively_owned(const Tensor& t) {
  return t.is_contiguous() && t.storage().use_count() == 1;
}

// Adds g into meta's gradient. A leaf owns its grad (first write copies), so later in-place
// accumulation and in-place clipping can never touch a tensor another node still holds. A
// non-leaf's first grad is the backward's tensor itself (no copy); later ones are added in
// place when that buffer is exclusively owned, else into a new one: either way each element
// is grad + g, one rounding, so the bits do not depend on which.
void accumulate(AutogradMeta& meta, const Tensor& g, const Shape& shape, const char* node) {
  R1_CHECK(g.shape() == shape, "backward of '{}' returned grad {} for an input of shape {}",
           node, shape_str(g.shape()), shape_str(shape));
  if (!meta.grad.defined()) {
    meta.grad = meta.is_leaf ? g.clone() : g;
    return;
  }
  if (meta.is_leaf) {
    const Tensor gc = g.contiguous();
    kernels::add_scaled()(meta.grad.device(), meta.grad, gc, 1.0);
  } else if (exclusively_owned(meta.grad) && g.dtype() == meta.grad.dtype() &&
             g.device() == meta.grad.device() && dtype_is_floating(g.dtype())) {
    const Tensor gc = g.detach().contiguous();
    kernels::binary()(meta.grad.device(), BinaryOp::Add, meta.grad, gc, meta.grad);
  } else {
    meta.grad = add(meta.grad, g);
  }
}

}  // namespace

bool grad_enabled() { return t_grad_enabled; }

NoGrad::NoGrad() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGrad::~NoGrad() { t_grad_enabled = prev_; }

bool needs_grad(std::initializer_list<Tensor> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

bool record(const char* name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor*>& outputs, BackwardFn backward) {
  if (!needs_grad(inputs)) return false;
  TapeNode node;
  node.name = name;
  for (const Tensor& t : inputs) {
    node.inputs.push_back(t.defined() && t.requires_grad() ? t.autograd_meta() : nullptr);
    node.input_shapes.push_back(t.defined() ? t.shape() : Shape{});
  }
  for (Tensor* out : outputs) {
    auto meta = std::make_shared<AutogradMeta>();
    meta->requires_grad = true;
    meta->is_leaf = false;
    out->mutable_autograd_meta() = meta;
    node.outputs.push_back(meta);
    node.output_shapes.push_back(out->shape());
    node.output_dtypes.push_back(out->dtype());
    node.output_devices.push_back(out->device());
  }
  node.backward = std::move(backward);
  t_tape.push_back(std::move(node));
  return true;
}

void backward(const Tensor& root, const Tensor& grad_root) {
  R1_NVTX_RANGE("autograd.backward");
  R1_CHECK(root.defined() && root.requires_grad(),
           "backward: the root does not require grad (no parameter reached it?)");
  Tensor g = grad_root;
  if (!g.defined()) {
    R1_CHECK(root.numel() == 1, "backward: implicit grad needs a one-element root, got {}",
             shape_str(root.shape()));
    g = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  {
    NoGrad ng;
    accumulate(*root.autograd_meta(), g, root.shape(), "root");
    for (size_t i = t_tape.size(); i-- > 0;) {
      TapeNode& node = t_tape[i];
      bool any = false;
      for (auto& m : node.outputs) any = any || m->grad.defined();
      if (any) {
        R1_NVTX_RANGE(node.name);
        std::vector<Tensor> grads;
        grads.reserve(node.outputs.size());
        for (size_t k = 0; k < node.outputs.size(); ++k) {
          const Tensor& og = node.outputs[k]->grad;
          grads.push_back(og.defined() ? og
                                       : Tensor::zeros(node.output_shapes[k],
                                                       node.output_dtypes[k],
                                                       node.output_devices[k]));
        }
        std::vector<Tensor> in_grads = node.backward(grads);
        R1_CHECK(in_grads.size() == node.inputs.size(),
                 "backward of '{}' returned {} grads for {} inputs", node.name, in_grads.size(),
                 node.inputs.size());
        for (size_t k = 0; k < node.inputs.size(); ++k) {
          if (node.inputs[k] && in_grads[k].defined())
            accumulate(*node.inputs[k], in_grads[k], node.input_shapes[k], node.name);
        }
      }
      // Free what the node saved and its outputs' grads as soon as it has run.
      for (auto& m : node.outputs)
        if (!m->retain_grad) m->grad = Tensor();
      node.backward = nullptr;
    }
  }
  t_tape.clear();
}

void clear_tape() { t_tape.clear(); }
size_t tape_size() { return t_tape.size(); }

void retain_grad(Tensor& t) {
  R1_CHECK(t.requires_grad(), "retain_grad on a tensor that does not require grad");
  t.autograd_meta()->retain_grad = true;
}

}  // namespace r1
