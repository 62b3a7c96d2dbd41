#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "base/error.h"
#include "ops/kernels.h"

namespace whale {

int argmax(const float* x, int n) {
  return static_cast<int>(argmax_f32(x, static_cast<size_t>(std::max(n, 0))));
}

Sampler::Sampler(const SamplingParams& p) : params_(p), rng_(p.seed) {
  check(p.temperature >= 0 && std::isfinite(p.temperature), "temperature must be >= 0");
  check(p.top_k >= 0, "top-k must be >= 0");
  check(p.top_p > 0 && p.top_p <= 1, "top-p must be in (0, 1]");
}

int Sampler::sample(const float* logits, int vocab) {
  return sample(logits, vocab, nullptr);
}

namespace {

// The kept tokens, most likely first, and their unnormalized weights exp((l − max) / T):
// top-k first, then the shortest prefix whose mass reaches top-p.
void nucleus(const SamplingParams& params, const float* logits, int vocab, std::vector<int>& ids,
             std::vector<double>& p) {
  ids.resize(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  int keep = params.top_k > 0 ? std::min(params.top_k, vocab) : vocab;
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(),
                    [&](int a, int b) { return logits[a] > logits[b]; });
  ids.resize(keep);
  p.resize(keep);
  double max = logits[ids[0]], sum = 0;
  for (int i = 0; i < keep; ++i)
    sum += p[i] = std::exp((logits[ids[i]] - max) / params.temperature);
  double mass = 0;
  for (int i = 0; i < keep; ++i) {
    mass += p[i] / sum;
    if (mass >= params.top_p) {
      ids.resize(i + 1);
      p.resize(i + 1);
      break;
    }
  }
}

}  // namespace

std::vector<double> Sampler::distribution(const float* logits, int vocab) const {
  std::vector<double> out(vocab, 0.0);
  if (params_.temperature == 0.0f) {
    out[argmax(logits, vocab)] = 1.0;
    return out;
  }
  std::vector<int> ids;
  std::vector<double> p;
  nucleus(params_, logits, vocab, ids, p);
  double sum = 0;
  for (double v : p) sum += v;
  for (size_t i = 0; i < ids.size(); ++i) out[ids[i]] = p[i] / sum;
  return out;
}

int Sampler::draw(const std::vector<double>& probs) {
  std::discrete_distribution<int> pick(probs.begin(), probs.end());
  return pick(rng_);
}

double Sampler::uniform() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

int Sampler::sample(const float* logits, int vocab, std::vector<int>* support) {
  if (params_.temperature == 0.0f) {
    int best = argmax(logits, vocab);
    if (support) *support = {best};
    return best;
  }
  std::vector<int> ids;
  std::vector<double> p;
  nucleus(params_, logits, vocab, ids, p);
  const int cut = static_cast<int>(ids.size());
  std::discrete_distribution<int> pick(p.begin(), p.begin() + cut);
  int chosen = ids[pick(rng_)];
  if (support) {
    support->assign(ids.begin(), ids.begin() + cut);
    std::sort(support->begin(), support->end());
  }
  return chosen;
}

}  // namespace whale
