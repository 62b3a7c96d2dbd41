// MTP speculative decoding: the acceptance rule keeps the target distribution exactly, greedy
// output equals plain greedy decoding token for token, sampled output has plain sampling's
// distribution (chi-square against the exact probabilities), and the cache rolls back.
#include "infer/speculative.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <map>
#include <random>

#include "base/error.h"
#include "infer/generator.h"
#include "model/random_init.h"
#include "model/transformer.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::TempDir;

// One thread: the tiny models gain nothing from more, and on a busy machine every parallel
// region's barrier can cost milliseconds.
struct OneThread {
  OneThread() : saved(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(saved); }
  int saved;
};

// A random V3 model with an MTP module; vocab overrides the preset's.
std::unique_ptr<Model> tiny_model(const TempDir& dir, int vocab, DType dtype = DType::BF16,
                                  std::vector<int> eos = {}, const std::string& preset = "tiny") {
  ModelConfig c = preset_config(preset);
  c.vocab_size = vocab;
  c.bos_token_id = 0;
  c.eos_token_ids = eos;
  InitOptions init;
  init.dtype = dtype;
  init.seed = 7;
  write_random_model(c, dir / "m", init);
  return Model::load(dir / "m");
}

std::vector<double> random_distribution(std::mt19937_64& rng, int n, int zeros) {
  std::vector<double> p(n);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double sum = 0;
  for (double& v : p) sum += v = u(rng) * u(rng);
  for (int i = 0; i < zeros; ++i) {             // some tokens outside the support (top-k / top-p)
    int k = static_cast<int>(rng() % (n - 1));  // the last one stays: p is never all zero
    sum -= p[k];
    p[k] = 0;
  }
  for (double& v : p) v /= sum;
  return p;
}

// Upper 0.1% point of chi-square with df degrees of freedom (Wilson–Hilferty).
double chi_square_critical(int df) {
  const double z = 3.09, a = 2.0 / (9.0 * df);
  return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

// Pearson's statistic of counts against probabilities, cells of expected count < 5 pooled.
double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int n,
                  int* df) {
  double stat = 0, pooled_expected = 0, pooled_count = 0;
  int cells = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    double e = probs[i] * n;
    if (e < 5) {
      pooled_expected += e;
      pooled_count += counts[i];
      if (e == 0) {
        EXPECT_EQ(counts[i], 0) << "a token of probability 0 was drawn: " << i;
      }
      continue;
    }
    stat += (counts[i] - e) * (counts[i] - e) / e;
    ++cells;
  }
  if (pooled_expected > 0) {
    stat += (pooled_count - pooled_expected) * (pooled_count - pooled_expected) / pooled_expected;
    ++cells;
  }
  *df = cells - 1;
  return stat;
}

// The output token's marginal, from the rule's own functions: the draft d ~ q is kept with
// probability a(d), otherwise the token comes from the residual r. P(x) = q(x)·a(x) +
// (1 − Σ_d q(d)·a(d))·r(x) must equal p(x).
TEST(Speculative, AcceptanceRuleMarginalIsTheTarget) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 2 + trial % 13;
    std::vector<double> p = random_distribution(rng, n, trial % 3);
    std::vector<double> q = trial % 7 == 0 ? p : random_distribution(rng, n, (trial / 3) % 3);
    std::vector<double> r = residual_distribution(p, q);
    double keep = 0;
    for (int d = 0; d < n; ++d) keep += q[d] * acceptance_probability(p, q, d);
    for (int x = 0; x < n; ++x) {
      double marginal = q[x] * acceptance_probability(p, q, x) + (1 - keep) * r[x];
      EXPECT_NEAR(marginal, p[x], 1e-12) << "trial " << trial << " token " << x;
    }
  }
}

TEST(Speculative, AcceptanceRuleEdgeCases) {
  std::vector<double> p = {0.5, 0.5, 0}, q = {0, 0.25, 0.75};
  EXPECT_EQ(acceptance_probability(p, q, 0), 1.0);  // q(d) = 0: never drafted, kept if it were
  EXPECT_EQ(acceptance_probability(p, q, 1), 1.0);
  EXPECT_EQ(acceptance_probability(p, q, 2), 0.0);
  std::vector<double> r = residual_distribution(p, q);
  EXPECT_NEAR(r[0], 0.5 / 0.75, 1e-15);
  EXPECT_NEAR(r[1], 0.25 / 0.75, 1e-15);
  EXPECT_EQ(r[2], 0.0);
  EXPECT_EQ(residual_distribution(p, p), p);  // p = q: nothing is ever rejected
  // Greedy is the one-hot special case: kept iff the draft is the target's argmax.
  std::vector<double> one_hot = {0, 1, 0};
  EXPECT_EQ(acceptance_probability(one_hot, {1, 0, 0}, 0), 0.0);
  EXPECT_EQ(acceptance_probability(one_hot, {0, 1, 0}, 1), 1.0);
  EXPECT_EQ(residual_distribution(one_hot, {1, 0, 0}), one_hot);
}

// The same rule run with a Sampler's random stream, many times: draws follow p.
TEST(Speculative, AcceptanceRuleSampledChiSquare) {
  std::mt19937_64 rng(2);
  std::vector<double> p = random_distribution(rng, 10, 2), q = random_distribution(rng, 10, 1);
  SamplingParams params;
  params.temperature = 1;
  params.seed = 3;
  Sampler sampler(params);
  const int N = 40000;
  std::vector<int> counts(p.size());
  const std::vector<double> r = residual_distribution(p, q);
  for (int i = 0; i < N; ++i) {
    int d = sampler.draw(q);
    int x = sampler.uniform() < acceptance_probability(p, q, d) ? d : sampler.draw(r);
    ++counts[x];
  }
  int df;
  double stat = chi_square(counts, p, N, &df);
  EXPECT_LT(stat, chi_square_critical(df)) << "df " << df;
}

TEST(Speculative, CacheTruncate) {
  OneThread one;
  TempDir dir;
  auto model = tiny_model(dir, 64);
  const int V = model->config().vocab_size;
  std::vector<int> tokens = {3, 9, 4, 17, 5};
  // Forward 5 tokens, roll back to 3, then forward the last two again: same logits as one pass.
  KVCache a = model->new_cache(), b = model->new_cache();
  std::vector<float> la(5 * V), lb(5 * V), tail(2 * V);
  model->forward(tokens.data(), 5, a, la.data());
  model->forward(tokens.data(), 3, b, lb.data());
  model->forward(tokens.data() + 3, 2, b, tail.data());
  b.truncate(3);
  EXPECT_EQ(b.length, 3);
  std::vector<float> again(2 * V);
  model->forward(tokens.data() + 3, 2, b, again.data());
  EXPECT_EQ(again, tail);
  EXPECT_THROW(b.truncate(9), Error);
}

void expect_greedy_identical(const Model& model, const std::vector<int>& prompt, int n,
                             int* accepted, int drafts = 1) {
  GenerateOptions options;
  options.max_new_tokens = n;
  options.stop_at_eos = false;
  std::vector<int> plain = generate(model, prompt, options);
  options.draft_tokens = drafts;
  GenerateStats stats;
  std::vector<int> streamed;
  std::vector<int> spec = generate_speculative(
      model, prompt, options,
      [&](int t) {
        streamed.push_back(t);
        return true;
      },
      &stats);
  ASSERT_EQ(spec.size(), static_cast<size_t>(n));
  EXPECT_EQ(spec, plain) << "prompt length " << prompt.size() << ", " << drafts << " drafts";
  EXPECT_EQ(streamed, spec);
  EXPECT_EQ(stats.generated_tokens, n);
  EXPECT_LE(stats.accepted, stats.drafted);
  // Every pass emits its accepted drafts and one more token (the first token comes from the
  // prompt's pass), except that a pass never drafts past the tokens still wanted, so only when
  // a single token was left can its accepted draft be the last one; drafts are checked in
  // order, each only if all before it were accepted (and the pass drafted that far).
  EXPECT_LE(n, stats.accepted + stats.verify_passes + 1);
  EXPECT_LE(stats.accepted + stats.verify_passes + 1, n + 1);
  ASSERT_EQ(stats.checked_at.size(), static_cast<size_t>(drafts));
  int checked = 0, accepted_by_depth = 0;
  for (int j = 0; j < drafts; ++j) {
    checked += stats.checked_at[j];
    accepted_by_depth += stats.accepted_at[j];
    if (j > 0) {
      EXPECT_LE(stats.checked_at[j], stats.accepted_at[j - 1]) << "depth " << j;
    }
  }
  EXPECT_EQ(stats.checked_at[0], stats.verify_passes);
  EXPECT_EQ(accepted_by_depth, stats.accepted);
  EXPECT_LE(checked, stats.drafted);
  *accepted += stats.accepted;
}

TEST(Speculative, GreedyEqualsPlainDecoding) {
  OneThread one;
  TempDir dir;
  int accepted = 0;
  // A small vocabulary so that random MTP drafts are often right and both paths run.
  for (DType dtype : {DType::BF16, DType::F32}) {
    auto model = tiny_model(dir, 8, dtype);
    for (int drafts : {1, 2, 4})  // more than one: the MTP module chained on its own outputs
      for (int len : {1, 2, 5, 11})
        for (int n : {1, 2, 3, 40}) {
          std::vector<int> prompt;
          for (int i = 0; i < len; ++i) prompt.push_back((i * 5 + len) % 8);
          expect_greedy_identical(*model, prompt, n, &accepted, drafts);
        }
  }
  EXPECT_GT(accepted, 0);
  auto wide = tiny_model(dir, 512);
  expect_greedy_identical(*wide, {5, 100, 7, 300, 2, 2, 9}, 64, &accepted);
  expect_greedy_identical(*wide, {5, 100, 7, 300, 2, 2, 9}, 64, &accepted, kMaxDraftTokens);
  // FP8 weights, and V3.2 (the indexer's top-k is below the sequence length from position 16).
  auto fp8 = tiny_model(dir, 8, DType::F8_E4M3);
  expect_greedy_identical(*fp8, {1, 2, 3, 4, 5, 6, 7, 0, 1, 2}, 40, &accepted);
  TempDir other;
  auto v32 = tiny_model(other, 8, DType::BF16, {}, "tiny-v32");
  expect_greedy_identical(*v32, {1, 2, 3, 4, 5, 6, 7, 0, 1, 2}, 40, &accepted);
}

TEST(Speculative, StopsAtEosAndCallback) {
  OneThread one;
  TempDir dir;
  auto model = tiny_model(dir, 8);
  GenerateOptions options;
  options.max_new_tokens = 30;
  options.stop_at_eos = false;
  std::vector<int> plain = generate(*model, {1, 2, 3}, options);
  int count = 0;
  std::vector<int> spec =
      generate_speculative(*model, {1, 2, 3}, options, [&](int) { return ++count < 7; });
  EXPECT_EQ(spec, std::vector<int>(plain.begin(), plain.begin() + 7));
  options.max_new_tokens = 0;
  EXPECT_TRUE(generate_speculative(*model, {1, 2, 3}, options).empty());
  for (int drafts : {0, kMaxDraftTokens + 1}) {
    GenerateOptions bad = options;
    bad.draft_tokens = drafts;
    EXPECT_THROW(generate_speculative(*model, {1, 2, 3}, bad), Error) << drafts;
  }
  // Make the 6th plain token the end of sequence: both stop right before its first occurrence.
  TempDir other;
  auto with_eos = tiny_model(other, 8, DType::BF16, {plain[5]});
  options.max_new_tokens = 30;
  options.stop_at_eos = true;
  std::vector<int> plain_eos = generate(*with_eos, {1, 2, 3}, options);
  EXPECT_LE(plain_eos.size(), 5u);
  EXPECT_EQ(generate_speculative(*with_eos, {1, 2, 3}, options), plain_eos);
}

// Sampling: the first three tokens' distribution equals plain sampling's, computed exactly from
// the model: P(t1) P(t2 | t1) for the pairs and Σ P(t1) P(t2 | t1) P(t3 | t1, t2) for the third.
TEST(Speculative, SampledDistributionMatchesTarget) {
  OneThread one;
  TempDir dir;
  auto model = tiny_model(dir, 6);
  const int V = 6;
  const std::vector<int> prompt = {2, 4, 1};
  SamplingParams params;
  params.temperature = 0.7f;
  params.top_k = 5;  // one token outside the support: it must never appear
  auto next = [&](const std::vector<int>& prefix) {
    KVCache cache = model->new_cache();
    std::vector<float> logits(prefix.size() * V);
    model->forward(prefix.data(), static_cast<int>(prefix.size()), cache, logits.data());
    return Sampler(params).distribution(logits.data() + (prefix.size() - 1) * V, V);
  };
  std::vector<double> pair(V * V), third(V, 0.0);
  const std::vector<double> p1 = next(prompt);
  for (int a = 0; a < V; ++a) {
    if (p1[a] == 0) continue;
    std::vector<int> pa = prompt;
    pa.push_back(a);
    const std::vector<double> p2 = next(pa);
    for (int b = 0; b < V; ++b) {
      pair[a * V + b] = p1[a] * p2[b];
      if (p2[b] == 0) continue;
      std::vector<int> pab = pa;
      pab.push_back(b);
      const std::vector<double> p3 = next(pab);
      for (int x = 0; x < V; ++x) third[x] += p1[a] * p2[b] * p3[x];
    }
  }
  // One draft per pass, then two (4 tokens, so that the first pass drafts tokens 2 and 3: the
  // third token is then the chain's second draft when both are accepted).
  for (int drafts : {1, 2}) {
    GenerateOptions options;
    options.max_new_tokens = drafts == 1 ? 3 : 4;
    options.stop_at_eos = false;
    options.draft_tokens = drafts;
    const int N = 3000;
    std::vector<int> pair_counts(V * V), third_counts(V);
    int drafted = 0, accepted = 0, second_checked = 0, second_accepted = 0;
    for (int seed = 0; seed < N; ++seed) {
      options.sampling = params;
      options.sampling.seed = 1000 + seed;
      GenerateStats stats;
      std::vector<int> out = generate_speculative(*model, prompt, options, nullptr, &stats);
      ASSERT_EQ(out.size(), static_cast<size_t>(options.max_new_tokens));
      ++pair_counts[out[0] * V + out[1]];
      ++third_counts[out[2]];
      drafted += stats.drafted;
      accepted += stats.accepted;
      if (drafts == 2) {
        second_checked += stats.checked_at[1];
        second_accepted += stats.accepted_at[1];
      }
    }
    int df;
    double stat = chi_square(pair_counts, pair, N, &df);
    EXPECT_LT(stat, chi_square_critical(df)) << drafts << " drafts: pairs, df " << df;
    stat = chi_square(third_counts, third, N, &df);
    EXPECT_LT(stat, chi_square_critical(df)) << drafts << " drafts: third token, df " << df;
    // Both branches of the rule ran many times, at the chain's second draft too.
    EXPECT_GT(accepted, drafted / 10);
    EXPECT_LT(accepted, drafted);
    if (drafts == 2) {
      EXPECT_GT(second_accepted, second_checked / 10);
      EXPECT_LT(second_accepted, second_checked);
    }
  }
}

TEST(Speculative, CliGreedyMatchesPlain) {
  TempDir dir;
  ASSERT_EQ(testing::run_whale("init --preset tiny --out " + (dir / "m")).exit_code, 0);
  const std::string common =
      "--threads 1 generate --model " + (dir / "m") + " --tokens 5,6,7 -n 24 --ignore-eos";
  auto plain = testing::run_whale(common);
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  for (const std::string drafts : {"", " --draft-tokens 3"}) {
    auto spec = testing::run_whale(common + " --speculative mtp --stats" + drafts);
    ASSERT_EQ(spec.exit_code, 0) << spec.output;
    EXPECT_EQ(spec.output.substr(0, spec.output.find('\n')),
              plain.output.substr(0, plain.output.find('\n')));
    EXPECT_NE(spec.output.find("speculative:"), std::string::npos) << spec.output;
    EXPECT_NE(spec.output.find("by depth"), std::string::npos) << spec.output;
  }
  EXPECT_NE(testing::run_whale(common + " --speculative mtp --draft-tokens 9").exit_code, 0);
  auto no_spec = testing::run_whale(common + " --draft-tokens 2");
  EXPECT_NE(no_spec.exit_code, 0);
  EXPECT_NE(no_spec.output.find("--speculative mtp"), std::string::npos) << no_spec.output;
  ASSERT_EQ(testing::run_whale("init --preset tiny-llama --out " + (dir / "l")).exit_code, 0);
  auto no_mtp =
      testing::run_whale("generate --model " + (dir / "l") + " --tokens 5 --speculative mtp");
  EXPECT_NE(no_mtp.exit_code, 0);
  EXPECT_NE(no_mtp.output.find("MTP"), std::string::npos) << no_mtp.output;
}

}  // namespace
}  // namespace whale
