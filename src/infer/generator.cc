#include "infer/generator.h"

#include <algorithm>
#include <chrono>

#include "base/error.h"

namespace whale {

std::vector<int> generate(const Model& model, const std::vector<int>& prompt,
                          const GenerateOptions& options, const std::function<bool(int)>& on_token,
                          GenerateStats* stats) {
  check(!prompt.empty(), "generate needs a non-empty prompt");
  check(options.max_new_tokens >= 0, "the number of tokens to generate must be >= 0");
  const ModelConfig& c = model.config();
  using clock = std::chrono::steady_clock;
  Sampler sampler(options.sampling);
  KVCache cache = model.new_cache();
  std::vector<float> logits(static_cast<size_t>(prompt.size()) * c.vocab_size);
  auto t0 = clock::now();
  model.forward(prompt.data(), static_cast<int>(prompt.size()), cache, logits.data());
  auto t1 = clock::now();
  std::vector<int> out;
  const float* last = logits.data() + (prompt.size() - 1) * c.vocab_size;
  std::vector<float> step(c.vocab_size);
  for (int i = 0; i < options.max_new_tokens; ++i) {
    int token = sampler.sample(last, c.vocab_size);
    bool eos =
        std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), token) != c.eos_token_ids.end();
    if (options.stop_at_eos && eos) break;
    out.push_back(token);
    if (on_token && !on_token(token)) break;
    if (i + 1 == options.max_new_tokens) break;
    model.forward(&token, 1, cache, step.data());
    last = step.data();
  }
  if (stats) {
    stats->prompt_tokens = static_cast<int>(prompt.size());
    stats->generated_tokens = static_cast<int>(out.size());
    stats->prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    stats->decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  }
  return out;
}

}  // namespace whale
