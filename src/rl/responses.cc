#include "rl/responses.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace whale {

PaddedBatch pad_sequences(const std::vector<std::vector<int>>& sequences) {
  PaddedBatch p;
  p.B = static_cast<int>(sequences.size());
  check(p.B > 0, "empty batch of responses");
  for (auto& s : sequences) p.T = std::max(p.T, static_cast<int>(s.size()));
  p.tokens.assign(static_cast<size_t>(p.B) * p.T, 0);
  for (int b = 0; b < p.B; ++b)
    std::copy(sequences[b].begin(), sequences[b].end(), p.tokens.begin() + static_cast<size_t>(b) * p.T);
  return p;
}

void forward_padded(TrainModel& model, const PaddedBatch& p) {
  TrainOptions t;
  t.mtp = false;
  t.balance_alpha = 0;
  t.forced_routing = p.forced.empty() ? nullptr : &p.forced;
  model.forward(p.tokens.data(), p.B, p.T, t);
}

double token_log_prob(const float* logits, int vocab, int token, const std::vector<int>* allowed,
                      std::vector<double>* probs) {
  double max = -INFINITY;
  auto visit = [&](auto&& f) {
    if (allowed)
      for (int v : *allowed) f(v);
    else
      for (int v = 0; v < vocab; ++v) f(v);
  };
  visit([&](int v) { max = std::max(max, static_cast<double>(logits[v])); });
  double sum = 0;
  visit([&](int v) { sum += std::exp(logits[v] - max); });
  const double log_z = max + std::log(sum);
  if (probs) {
    probs->assign(vocab, 0.0);
    visit([&](int v) { (*probs)[v] = std::exp(logits[v] - log_z); });
  }
  return logits[token] - log_z;
}

}  // namespace whale
