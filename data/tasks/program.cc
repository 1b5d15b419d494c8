#include "data/tasks/program.h"

#include <map>
#include <sstream>

#include "engine/error.h"

namespace r1::data {

namespace {

struct Operand {
  bool is_reg = false;
  int reg = 0;
  int64_t value = 0;
};

struct Instr {
  std::string op;
  std::vector<Operand> args;
  std::string label;  // jump target
  int line = 0;
};

bool parse_operand(const std::string& s, Operand* o) {
  if (s.size() == 1 && s[0] >= 'a' && s[0] <= 'z') {
    *o = {true, s[0] - 'a', 0};
    return true;
  }
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size() || s.size() > 19) return false;
  for (size_t k = i; k < s.size(); ++k)
    if (s[k] < '0' || s[k] > '9') return false;
  *o = {false, 0, std::stoll(s)};
  return true;
}

// Parses the program; returns "" or the error. Operand shapes per op: r=register, x=any, L=label.
std::string parse(std::string_view src, const ProgramLimits& lim, std::vector<Instr>* code,
                  std::map<std::string, size_t>* labels) {
  static const std::map<std::string, std::string> kShapes = {
      {"set", "rx"}, {"add", "rx"}, {"sub", "rx"}, {"mul", "rx"}, {"div", "rx"}, {"mod", "rx"},
      {"jmp", "L"},  {"jz", "xL"},  {"jnz", "xL"}, {"jlt", "xxL"}, {"push", "x"}, {"pop", "r"},
      {"print", "x"}, {"halt", ""}};
  std::istringstream in{std::string(src)};
  std::string line;
  for (int no = 1; std::getline(in, line); ++no) {
    if (static_cast<size_t>(no) > lim.max_lines) return fmt::format("more than {} lines", lim.max_lines);
    if (const size_t h = line.find('#'); h != std::string::npos) line.resize(h);
    std::istringstream ws(line);
    std::vector<std::string> tok;
    for (std::string t; ws >> t;) tok.push_back(t);
    if (tok.empty()) continue;
    if (tok.size() == 1 && tok[0].size() > 1 && tok[0].back() == ':') {
      const std::string name = tok[0].substr(0, tok[0].size() - 1);
      if (!labels->emplace(name, code->size()).second) return fmt::format("line {}: label {} defined twice", no, name);
      continue;
    }
    const auto shape = kShapes.find(tok[0]);
    if (shape == kShapes.end()) return fmt::format("line {}: unknown instruction {}", no, tok[0]);
    if (tok.size() != shape->second.size() + 1) return fmt::format("line {}: {} takes {} operands", no, tok[0], shape->second.size());
    Instr ins{tok[0], {}, "", no};
    for (size_t k = 0; k < shape->second.size(); ++k) {
      const char want = shape->second[k];
      if (want == 'L') {
        ins.label = tok[k + 1];
        continue;
      }
      Operand o;
      if (!parse_operand(tok[k + 1], &o) || (want == 'r' && !o.is_reg))
        return fmt::format("line {}: bad operand {}", no, tok[k + 1]);
      ins.args.push_back(o);
    }
    code->push_back(std::move(ins));
  }
  for (const Instr& ins : *code)
    if (!ins.label.empty() && !labels->count(ins.label))
      return fmt::format("line {}: no label {}", ins.line, ins.label);
  return "";
}

}  // namespace

ProgramResult run_program(std::string_view source, const std::vector<int64_t>& inputs,
                          const ProgramLimits& lim) {
  ProgramResult r;
  std::vector<Instr> code;
  std::map<std::string, size_t> labels;
  if (r.error = parse(source, lim, &code, &labels); !r.error.empty()) return r;
  int64_t reg[26] = {};
  for (size_t i = 0; i < inputs.size() && i < 26; ++i) reg[i] = inputs[i];
  std::vector<int64_t> stack;
  const auto val = [&](const Operand& o) { return o.is_reg ? reg[o.reg] : o.value; };
  size_t pc = 0;
  while (pc < code.size()) {
    const Instr& in = code[pc];
    if (++r.steps > lim.max_steps) {
      r.error = fmt::format("step limit {} reached", lim.max_steps);
      return r;
    }
    const auto fail = [&](const char* why) {
      r.error = fmt::format("line {}: {}", in.line, why);
      return r;
    };
    size_t next = pc + 1;
    const std::string& op = in.op;
    if (op == "set") {
      reg[in.args[0].reg] = val(in.args[1]);
    } else if (op == "add" || op == "sub" || op == "mul" || op == "div" || op == "mod") {
      int64_t& d = reg[in.args[0].reg];
      const int64_t x = val(in.args[1]);
      bool overflow = false;
      if (op == "add") overflow = __builtin_add_overflow(d, x, &d);
      else if (op == "sub") overflow = __builtin_sub_overflow(d, x, &d);
      else if (op == "mul") overflow = __builtin_mul_overflow(d, x, &d);
      else if (x == 0) return fail("division by zero");
      else if (d == INT64_MIN && x == -1) overflow = true;
      else d = op == "div" ? d / x : d % x;
      if (overflow) return fail("integer overflow");
    } else if (op == "jmp") {
      next = labels[in.label];
    } else if (op == "jz" || op == "jnz") {
      if ((val(in.args[0]) == 0) == (op == "jz")) next = labels[in.label];
    } else if (op == "jlt") {
      if (val(in.args[0]) < val(in.args[1])) next = labels[in.label];
    } else if (op == "push") {
      if (stack.size() >= lim.max_stack) return fail("stack limit reached");
      stack.push_back(val(in.args[0]));
    } else if (op == "pop") {
      if (stack.empty()) return fail("pop from an empty stack");
      reg[in.args[0].reg] = stack.back();
      stack.pop_back();
    } else if (op == "print") {
      if (r.outputs.size() >= lim.max_outputs) return fail("output limit reached");
      r.outputs.push_back(val(in.args[0]));
    } else if (op == "halt") {
      break;
    }
    pc = next;
  }
  r.ok = true;
  return r;
}

const char* program_language_help(bool chinese) {
  if (chinese)
    return "语言说明：寄存器 a..z（整数，输入依次放在 a、b 中，其余为 0）；指令每行一条："
           "set r x、add r x、sub r x、mul r x、div r x、mod r x（r 为寄存器，x 为寄存器或整数），"
           "jmp L、jz x L、jnz x L、jlt x y L（x<y 时跳转），push x、pop r、print x、halt，"
           "以及标签行 L:。";
  return "Language: registers a..z hold integers (the inputs are in a and b, the rest are 0); "
         "one instruction per line: set r x, add r x, sub r x, mul r x, div r x, mod r x (r a "
         "register, x a register or an integer), jmp L, jz x L, jnz x L, jlt x y L (jump if "
         "x < y), push x, pop r, print x, halt, and label lines L:.";
}

}  // namespace r1::data
