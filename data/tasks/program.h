// A tiny register language for the program-writing task, and its interpreter. The verifier
// runs the model's program here, never on the host: 26 int64 registers a..z, a stack, and
// limits on steps, stack depth (memory), output count and program size; arithmetic overflow
// and division by zero stop the program with an error.
//
//   set r x | add r x | sub r x | mul r x | div r x | mod r x     (x: register or integer)
//   jmp L | jz x L | jnz x L | jlt x y L | push x | pop r | print x | halt | L:   # comment
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace r1::data {

struct ProgramLimits {
  int64_t max_steps = 10000;
  size_t max_stack = 256;
  size_t max_outputs = 64;
  size_t max_lines = 200;
};

struct ProgramResult {
  bool ok = false;
  std::string error;  // why it stopped, when !ok: "line 3: division by zero"
  std::vector<int64_t> outputs;
  int64_t steps = 0;
};

// inputs go to registers a, b, c, ... in order.
ProgramResult run_program(std::string_view source, const std::vector<int64_t>& inputs,
                          const ProgramLimits& limits = {});

// The language summary shown in prompts.
const char* program_language_help(bool chinese);

}  // namespace r1::data
