// Prompt templates: the R1-Zero template (DeepSeek-R1 paper, Table 1) and the R1 chat
// template, whose assistant turns carry a reasoning block and a summary
// (<think>\n reasoning \n</think>\n\n summary), with DeepSeek-V3's role tokens.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace r1::data {

// The special tokens of r1's own tokenizers (train_bpe with these keeps the chat template
// valid for a tokenizer trained here and for DeepSeek-V3's). kBos is the BOS of both.
inline constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
inline constexpr const char* kEos = "<｜end▁of▁sentence｜>";
inline constexpr const char* kUser = "<｜User｜>";
inline constexpr const char* kAssistant = "<｜Assistant｜>";
inline constexpr const char* kPad = "<｜▁pad▁｜>";
inline constexpr const char* kThinkOpen = "<think>";
inline constexpr const char* kThinkClose = "</think>";
inline constexpr const char* kAnswerOpen = "<answer>";
inline constexpr const char* kAnswerClose = "</answer>";
const std::vector<std::string>& r1_special_tokens();

// "A conversation between User and Assistant. ... User: {question}. Assistant:"; the
// completion is expected to be "<think> ... </think> <answer> ... </answer>".
std::string r1_zero_prompt(std::string_view question);
// The same instruction in one sentence, for tiny models whose context and compute are short:
// "A conversation between User and Assistant. The Assistant thinks inside <think> </think>
// and gives the answer inside <answer> </answer>. User: {question} Assistant:".
std::string r1_zero_prompt_short(std::string_view question);

struct ChatMessage {
  std::string role;       // "system", "user" or "assistant"
  std::string content;    // for the assistant: the summary shown to the user
  std::string reasoning;  // assistant only: the reasoning block (may be empty)
};

// BOS, the system text, then <｜User｜>text and <｜Assistant｜><think>\n..\n</think>\n\nsummary
// <｜end▁of▁sentence｜> turns. As DeepSeek-R1's template, reasoning of earlier assistant turns
// is dropped (only the last turn's is kept when it is the final message). With
// add_generation_prompt, ends with "<｜Assistant｜><think>\n" for the model to continue.
// Throws InputError on an unknown role.
std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt);

// A completion split into its parts. For the R1-Zero format, well_formed means exactly one
// <think>..</think> followed by exactly one <answer>..</answer> and nothing after it but
// whitespace (and an optional EOS).
struct CompletionParts {
  bool well_formed = false;
  std::string reasoning;  // inside <think></think>
  std::string answer;     // inside <answer></answer>, or the summary after </think>
};
CompletionParts parse_r1_zero_completion(std::string_view completion);
// The chat form: "reasoning</think>summary" (the prompt already opened <think>).
CompletionParts parse_r1_chat_completion(std::string_view completion);

}  // namespace r1::data
