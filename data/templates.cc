#include "data/templates.h"

#include "engine/error.h"

namespace r1::data {

const std::vector<std::string>& r1_special_tokens() {
  static const std::vector<std::string> t = {kBos,      kEos,        kPad,       kUser,
                                             kAssistant, kThinkOpen, kThinkClose, kAnswerOpen,
                                             kAnswerClose};
  return t;
}

std::string r1_zero_prompt(std::string_view question) {
  // DeepSeek-R1 paper, Table 1, verbatim; "prompt" is replaced by the question.
  std::string s =
      "A conversation between User and Assistant. The user asks a question, and the Assistant "
      "solves it. The assistant first thinks about the reasoning process in the mind and then "
      "provides the user with the answer. The reasoning process and answer are enclosed within "
      "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
      "process here </think> <answer> answer here </answer>. User: ";
  s += question;
  s += ". Assistant:";
  return s;
}

std::string r1_zero_prompt_short(std::string_view question) {
  std::string s =
      "A conversation between User and Assistant. The Assistant thinks inside <think> </think> "
      "and gives the answer inside <answer> </answer>. User: ";
  s += question;
  s += " Assistant:";
  return s;
}

std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string s = kBos;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system") {
      s += m.content;
    } else if (m.role == "user") {
      s += kUser;
      s += m.content;
    } else if (m.role == "assistant") {
      s += kAssistant;
      const bool last = i + 1 == messages.size();
      if (last && !m.reasoning.empty()) {
        s += kThinkOpen;
        s += "\n" + m.reasoning + "\n";
        s += kThinkClose;
        s += "\n\n";
      }
      s += m.content;
      s += kEos;
    } else {
      throw InputError(fmt::format("chat message {}: unknown role \"{}\"", i, m.role));
    }
  }
  if (add_generation_prompt) {
    s += kAssistant;
    s += kThinkOpen;
    s += "\n";
  }
  return s;
}

namespace {

size_t count(std::string_view s, std::string_view what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string_view::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

std::string_view trim(std::string_view s) {
  const auto ws = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

CompletionParts parse_r1_zero_completion(std::string_view c) {
  CompletionParts p;
  const size_t t0 = c.find(kThinkOpen), t1 = c.find(kThinkClose);
  const size_t a0 = c.find(kAnswerOpen), a1 = c.find(kAnswerClose);
  if (t0 != std::string_view::npos && t1 != std::string_view::npos && t1 > t0)
    p.reasoning = std::string(c.substr(t0 + 7, t1 - t0 - 7));
  if (a0 != std::string_view::npos && a1 != std::string_view::npos && a1 > a0)
    p.answer = std::string(trim(c.substr(a0 + 8, a1 - a0 - 8)));
  std::string_view tail = a1 == std::string_view::npos ? c : c.substr(a1 + 9);
  tail = trim(tail);
  if (tail.size() >= std::string_view(kEos).size() && tail.ends_with(kEos))
    tail = trim(tail.substr(0, tail.size() - std::string_view(kEos).size()));
  p.well_formed = count(c, kThinkOpen) == 1 && count(c, kThinkClose) == 1 &&
                  count(c, kAnswerOpen) == 1 && count(c, kAnswerClose) == 1 &&
                  trim(c.substr(0, t0)).empty() && t0 < t1 && t1 < a0 && a0 < a1 &&
                  trim(c.substr(t1 + 8, a0 - t1 - 8)).empty() && tail.empty();
  return p;
}

CompletionParts parse_r1_chat_completion(std::string_view c) {
  CompletionParts p;
  const size_t t1 = c.find(kThinkClose);
  if (t1 == std::string_view::npos) return p;
  p.reasoning = std::string(trim(c.substr(0, t1)));
  std::string_view rest = c.substr(t1 + 8);
  if (rest.ends_with(kEos)) rest.remove_suffix(std::string_view(kEos).size());
  p.answer = std::string(trim(rest));
  p.well_formed = count(c, kThinkClose) == 1 && count(c, kThinkOpen) == 0 && !p.answer.empty();
  return p;
}

}  // namespace r1::data
