#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "base/error.h"

namespace whale {

int argmax(const float* x, int n) {
  return static_cast<int>(std::max_element(x, x + n) - x);
}

Sampler::Sampler(const SamplingParams& p) : params_(p), rng_(p.seed) {
  check(p.temperature >= 0 && std::isfinite(p.temperature), "temperature must be >= 0");
  check(p.top_k >= 0, "top-k must be >= 0");
  check(p.top_p > 0 && p.top_p <= 1, "top-p must be in (0, 1]");
}

int Sampler::sample(const float* logits, int vocab) {
  return sample(logits, vocab, nullptr);
}

int Sampler::sample(const float* logits, int vocab, std::vector<int>* support) {
  if (params_.temperature == 0.0f) {
    int best = argmax(logits, vocab);
    if (support) *support = {best};
    return best;
  }
  std::vector<int> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  int keep = params_.top_k > 0 ? std::min(params_.top_k, vocab) : vocab;
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(),
                    [&](int a, int b) { return logits[a] > logits[b]; });
  ids.resize(keep);
  std::vector<double> p(keep);
  double max = logits[ids[0]], sum = 0;
  for (int i = 0; i < keep; ++i)
    sum += p[i] = std::exp((logits[ids[i]] - max) / params_.temperature);
  double mass = 0;
  int cut = keep;
  for (int i = 0; i < keep; ++i) {
    mass += p[i] / sum;
    if (mass >= params_.top_p) {
      cut = i + 1;
      break;
    }
  }
  std::discrete_distribution<int> pick(p.begin(), p.begin() + cut);
  int chosen = ids[pick(rng_)];
  if (support) {
    support->assign(ids.begin(), ids.begin() + cut);
    std::sort(support->begin(), support->end());
  }
  return chosen;
}

}  // namespace whale
