// Autograd as a tape (DESIGN.md "Tensor and autograd"). Each differentiable op that sees an
// input requiring grad (and grad mode on) records a Node: its inputs' and outputs' autograd
// handles, what it saved, and a backward function. backward(root) replays the tape in
// reverse, accumulating gradients, then clears it: one backward per forward. Leaves keep
// their .grad across backward calls (gradient accumulation) until zero_grad.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "engine/tensor.h"

namespace r1 {

struct AutogradMeta {
  bool requires_grad = false;
  bool is_leaf = true;
  bool retain_grad = false;  // keep a non-leaf's grad after backward (debugging, tests)
  Tensor grad;
};

// Given the gradients of the node's outputs (all defined: missing ones are zero-filled),
// returns one gradient per input (undefined where the input needs none).
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

struct TapeNode {
  const char* name = "";
  std::vector<std::shared_ptr<AutogradMeta>> inputs;  // null where no grad is needed
  std::vector<Shape> input_shapes;
  std::vector<std::shared_ptr<AutogradMeta>> outputs;
  std::vector<Shape> output_shapes;
  std::vector<DType> output_dtypes;
  std::vector<Device> output_devices;
  BackwardFn backward;
};

bool grad_enabled();

// Turns recording off for its lifetime (rollouts, eval, optimizer steps).
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool prev_;
};

// True when grad mode is on and any defined input requires grad.
bool needs_grad(std::initializer_list<Tensor> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Records a node when needs_grad(inputs); marks each output as requiring grad (non-leaf).
// `backward` must return inputs.size() tensors. Returns whether a node was recorded.
bool record(const char* name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor*>& outputs, BackwardFn backward);

// Replays the tape from `root`. grad_root defaults to ones (root must then be a scalar or
// one element). Clears the tape afterwards.
void backward(const Tensor& root, const Tensor& grad_root = Tensor());

void clear_tape();
size_t tape_size();

// Keeps a non-leaf's gradient after backward.
void retain_grad(Tensor& t);

}  // namespace r1
