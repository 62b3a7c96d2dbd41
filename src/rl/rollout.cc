#include "rl/rollout.h"

#include <algorithm>
#include <chrono>

#include "base/error.h"
#include "model/moe.h"

namespace whale {

std::vector<Rollout> sample_rollouts(const Model& model,
                                     const std::vector<std::vector<int>>& prompts,
                                     const RolloutOptions& o, RolloutStats* stats) {
  const ModelConfig& c = model.config();
  const int V = c.vocab_size, G = o.group_size, P = static_cast<int>(prompts.size());
  const int K = c.num_experts_per_tok;
  auto start = std::chrono::steady_clock::now();
  // MoE layer ordinal of each main layer (-1 for dense ones).
  std::vector<int> moe_ordinal(c.num_hidden_layers, -1);
  int moe_layers = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_moe_layer(l)) moe_ordinal[l] = moe_layers++;

  // Prefill every prompt once, in one batched forward.
  std::vector<KVCache> prompt_caches(P, model.new_cache());
  std::vector<KVCache*> caches;
  std::vector<int> counts, tokens;
  for (int p = 0; p < P; ++p) {
    check(!prompts[p].empty(), "rollout: empty prompt");
    caches.push_back(&prompt_caches[p]);
    counts.push_back(static_cast<int>(prompts[p].size()));
    tokens.insert(tokens.end(), prompts[p].begin(), prompts[p].end());
  }
  // Rows of the current forward → rollout (or prompt) index, for routing records.
  std::vector<int> row_owner;
  std::vector<std::vector<std::vector<int>>> prompt_routing(
      P, std::vector<std::vector<int>>(moe_layers));
  std::vector<Rollout> out(static_cast<size_t>(P) * G);
  ForwardOptions forward_options;
  bool prefill = true;
  if (o.record_routing)
    forward_options.on_routing = [&](int layer, const Routing& r) {
      if (layer >= c.num_hidden_layers || moe_ordinal[layer] < 0) return;
      for (size_t row = 0; row < row_owner.size(); ++row) {
        auto& dest = prefill ? prompt_routing[row_owner[row]][moe_ordinal[layer]]
                             : out[row_owner[row]].routing[moe_ordinal[layer]];
        dest.insert(dest.end(), r.experts.begin() + row * K, r.experts.begin() + (row + 1) * K);
      }
    };
  for (int p = 0; p < P; ++p) row_owner.insert(row_owner.end(), prompts[p].size(), p);
  std::vector<float> logits(tokens.size() * V);
  model.forward_batch(tokens.data(), caches, counts, logits.data(), nullptr, forward_options);
  prefill = false;

  std::vector<KVCache> cache(out.size());
  std::vector<Sampler> samplers;
  std::vector<std::vector<float>> last(out.size());
  size_t row_end = 0;
  for (int p = 0; p < P; ++p) {
    row_end += prompts[p].size();
    for (int g = 0; g < G; ++g) {
      const size_t i = static_cast<size_t>(p) * G + g;
      out[i].prompt_index = p;
      out[i].prompt = prompts[p];
      if (o.record_routing) out[i].routing = prompt_routing[p];
      cache[i] = prompt_caches[p];
      last[i].assign(logits.begin() + (row_end - 1) * V, logits.begin() + row_end * V);
      SamplingParams sp = o.sampling;
      sp.seed = o.sampling.seed * 1000003ull + i;
      samplers.emplace_back(sp);
    }
  }
  std::vector<char> done(out.size(), 0);
  long generated = 0;
  std::vector<int> support;
  for (int step = 0; step < o.max_new_tokens; ++step) {
    tokens.clear();
    caches.clear();
    counts.clear();
    row_owner.clear();
    for (size_t i = 0; i < out.size(); ++i) {
      if (done[i]) continue;
      int token = samplers[i].sample(last[i].data(), V, o.record_support ? &support : nullptr);
      out[i].response.push_back(token);
      if (o.record_support) out[i].support.push_back(support);
      ++generated;
      if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), token) !=
          c.eos_token_ids.end()) {
        done[i] = 1;
        continue;
      }
      if (step + 1 == o.max_new_tokens) {
        out[i].truncated = true;
        done[i] = 1;
        continue;
      }
      tokens.push_back(token);
      caches.push_back(&cache[i]);
      counts.push_back(1);
      row_owner.push_back(static_cast<int>(i));
    }
    if (tokens.empty()) break;
    logits.resize(tokens.size() * V);
    model.forward_batch(tokens.data(), caches, counts, logits.data(), nullptr, forward_options);
    for (size_t r = 0; r < row_owner.size(); ++r)
      last[row_owner[r]].assign(logits.begin() + r * V, logits.begin() + (r + 1) * V);
  }
  if (o.record_routing) {
    // The last token is never fed back, so it has no recorded experts. Its position's output
    // enters no log-probability (token p is scored from position p − 1, and nothing attends
    // to the last position), so any experts do: repeat the previous position's.
    for (auto& r : out)
      for (auto& layer : r.routing)
        while (layer.size() < (r.prompt.size() + r.response.size()) * K) {
          std::vector<int> previous(layer.end() - K, layer.end());
          layer.insert(layer.end(), previous.begin(), previous.end());
        }
  }
  if (stats) {
    stats->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    stats->generated_tokens = generated;
  }
  return out;
}

}  // namespace whale
