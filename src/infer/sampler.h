// Next-token choice from logits: greedy at temperature 0, otherwise softmax(logits / T)
// restricted to the top-k tokens and then to the smallest set whose mass reaches top-p.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace whale {

struct SamplingParams {
  float temperature = 0.0f;
  int top_k = 0;       // 0: no limit
  float top_p = 1.0f;  // 1: no limit
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int sample(const float* logits, int vocab);
  // Also returns the token set the draw was made from (after top-k / top-p), sorted; for
  // greedy decoding, just the chosen token.
  int sample(const float* logits, int vocab, std::vector<int>* support);

  // The distribution sample() draws from, over the whole vocabulary (zero outside the top-k /
  // top-p set; one-hot at the argmax for greedy decoding).
  std::vector<double> distribution(const float* logits, int vocab) const;
  // A draw from an explicit distribution (non-negative, any positive total), and a uniform
  // number in [0, 1): the random steps of speculative decoding, on this sampler's stream.
  int draw(const std::vector<double>& probs);
  double uniform();
  bool greedy() const { return params_.temperature == 0.0f; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

int argmax(const float* x, int n);

}  // namespace whale
