// Shared helpers for the tests: where the fixtures are, running the whale binary, comparing.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/file.h"
#include "model/transformer.h"
#include "ops/linear.h"
#include "ops/precision.h"

namespace whale::testing {

// The tests hold whale to PyTorch's f32 arithmetic, so bf16 and q8 weights meet f32 activations
// here and in every whale process a test starts (the environment is inherited); the tests of the
// faster rounded-activation paths turn them on themselves (FastActivations below).
inline const bool kExactByDefault = [] {
  setenv("WHALE_EXACT", "1", 1);
  set_exact_activations(true);
  return true;
}();

// Turns the rounded-activation paths of linear_forward (AVX512-BF16 for bf16 weights,
// AVX512-VNNI for q8) on for one scope, where the CPU has them.
struct FastActivations {
  FastActivations() { set_exact_activations(false); }
  ~FastActivations() { set_exact_activations(true); }
};

// A model folder loaded twice: for the fast paths (Model::load under FastActivations: rows
// reordered, packed, copied where the CPU has the kernels) and as stored (the checkpoint's
// tensors as they are).
struct LoadedTwice {
  std::unique_ptr<Model> fast;
  std::unique_ptr<Checkpoint> checkpoint;  // the stored model's tensors
  std::unique_ptr<Model> stored;
  explicit LoadedTwice(const std::string& dir) {
    {
      FastActivations on;
      fast = Model::load(dir);
    }
    checkpoint = std::make_unique<Checkpoint>(dir);
    stored = Model::from_source(fast->config(), *checkpoint);
  }
};

// A float's bits, for tests that demand the same result bit for bit.
inline uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// n values drawn from N(mean, 1).
inline std::vector<float> random_vector(size_t n, std::mt19937& rng, float mean = 0) {
  std::normal_distribution<float> normal(mean, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

inline std::string source_dir() {
  return WHALE_SOURCE_DIR;
}
inline std::string golden_dir(const std::string& name) {
  return source_dir() + "/tests/golden/fixtures/" + name;
}
inline std::vector<int> golden_tokens(const std::string& name) {
  auto j = nlohmann::json::parse(read_file(golden_dir(name) + "/tokens.json"));
  return j["tokens"].get<std::vector<int>>();
}

// A fresh temporary folder, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/whale-test-XXXXXX";
    const char* made = mkdtemp(tmpl);
    if (!made) throw std::runtime_error("mkdtemp failed for /tmp/whale-test-XXXXXX");
    path = made;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};
// Runs the whale binary with the given arguments (a shell-quoted string).
inline RunResult run_whale(const std::string& args) {
  std::string command = std::string(WHALE_BINARY) + " " + args + " 2>&1";
  RunResult r{-1, ""};
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// max |a − b| / max |b|: the error relative to the scale of the reference.
inline double relative_max_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

inline std::string join_ids(const std::vector<int>& ids) {
  std::string s;
  for (int id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

// A Linear whose rows are laid out for a kernel (group lanes, packed bf16) against the same weights
// as stored: the same rows from row_to_f32; linear_forward of both for T = 1, 3, 7, kGemmMinTokens
// and 19 on the exact path and, where `fast_available`, the fast one — bit for bit where both read
// the rows in order (the exact path, prefill's tiles), within tolerance(x_t, r, y_ref) on the row
// dots (x_t: the token's activations, r: the row) — and the exact path within that tolerance of the
// laid-out Linear's double reference.
template <class Tolerance>
void expect_same_products(const Linear& laid_out, const Linear& stored, bool fast_available,
                          std::mt19937& rng, const Tolerance& tolerance) {
  const int rows = stored.rows, cols = stored.cols;
  std::vector<float> a(cols), b(cols);
  for (int r = 0; r < rows; ++r) {
    stored.row_to_f32(r, a.data());
    laid_out.row_to_f32(r, b.data());
    ASSERT_EQ(a, b) << "row " << r;
  }
  for (bool fast : {false, true}) {
    if (fast && !fast_available) continue;
    set_exact_activations(!fast);
    for (int T : {1, 3, 7, kGemmMinTokens, 19}) {
      const auto x = random_vector(static_cast<size_t>(T) * cols, rng);
      std::vector<float> y(static_cast<size_t>(T) * rows), y_stored(y.size()), y_ref(y.size());
      linear_forward(laid_out, x.data(), T, y.data());
      linear_forward(stored, x.data(), T, y_stored.data());
      linear_forward_reference(laid_out, x.data(), T, y_ref.data());
      for (size_t i = 0; i < y.size(); ++i) {
        const int t = static_cast<int>(i) / rows, r = static_cast<int>(i) % rows;
        const float close = tolerance(x.data() + static_cast<size_t>(t) * cols, r, y_ref[i]);
        if (!fast || T >= kGemmMinTokens) {
          ASSERT_EQ(bits(y[i]), bits(y_stored[i])) << "fast " << fast << " T " << T;
        } else {
          ASSERT_NEAR(y[i], y_stored[i], close) << "T " << T;
        }
        if (!fast) {
          ASSERT_NEAR(y[i], y_ref[i], close);
        }
      }
    }
  }
  set_exact_activations(true);
}

// Logits [tokens, vocab] of a sequence run through a model one decode step at a time (the row
// dots), or as one prefill (the GEMM tiles).
inline std::vector<float> decode_logits(const Model& m, const std::vector<int>& tokens) {
  const size_t V = m.config().vocab_size;
  std::vector<float> logits(tokens.size() * V);
  KVCache cache = m.new_cache();
  for (size_t t = 0; t < tokens.size(); ++t) m.forward(&tokens[t], 1, cache, logits.data() + t * V);
  return logits;
}
inline std::vector<float> prefill_logits(const Model& m, const std::vector<int>& tokens) {
  std::vector<float> logits(tokens.size() * m.config().vocab_size);
  KVCache cache = m.new_cache();
  m.forward(tokens.data(), static_cast<int>(tokens.size()), cache, logits.data());
  return logits;
}

// Two models holding the same weights in different layouts decode `tokens` step by step to the
// same logits: bit for bit on the exact path, within fast_tolerance relative on the fast one
// (1e-3 where both take the same products; more where one reads copies with other rounding).
inline void expect_same_decode(const Model& a, const Model& b, const std::vector<int>& tokens,
                               double fast_tolerance = 1e-3) {
  for (bool fast : {false, true}) {
    set_exact_activations(!fast);
    const auto logits_a = decode_logits(a, tokens), logits_b = decode_logits(b, tokens);
    if (!fast) {
      EXPECT_EQ(logits_a, logits_b);
    } else {
      EXPECT_LT(relative_max_error(logits_a, logits_b), fast_tolerance);
    }
  }
  set_exact_activations(true);
}

// A tiny V3 whose MLA widths fit the loader's copies of kv_b_proj (MlaWeights::absorbed_keys /
// absorbed_values): kv_lora_rank 128, 64-wide heads. Written to dir/preset (the tiny preset's
// config) and dir/wide (this one), as bf16; returns dir/wide.
inline std::string init_wide_latent_model(const TempDir& dir) {
  auto r = run_whale("init --preset tiny --out " + (dir / "preset"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json config = nlohmann::json::parse(read_file(dir / "preset/config.json"));
  config["kv_lora_rank"] = 128;
  config["qk_nope_head_dim"] = 64;
  config["v_head_dim"] = 64;
  write_file_atomic(dir / "config.json", config.dump(2));
  r = run_whale("init --config " + (dir / "config.json") + " --dtype bf16 --seed 4 --out " +
                (dir / "wide"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return dir / "wide";
}

// Decode of `model`, which reads copies of kv_b_proj on the fast path, against `plain` (the same
// weights as stored): the exact path ignores the copies (plain's bits); the fast path stays
// within `bound` of the exact logits and is not plain's fast path (the copies are read); and a
// verification pass of three rows gives each row the bits of its own decode step.
inline void expect_absorbed_copies_decode(const Model& model, const Model& plain, double bound) {
  std::vector<int> tokens;
  for (int i = 0; i < 12; ++i) tokens.push_back((i * 37 + 5) % model.config().vocab_size);
  set_exact_activations(true);
  const std::vector<float> reference = decode_logits(plain, tokens);
  ASSERT_EQ(decode_logits(model, tokens), reference);
  set_exact_activations(false);
  const std::vector<float> steps = decode_logits(model, tokens);
  EXPECT_LT(relative_max_error(steps, reference), bound);
  EXPECT_NE(steps, decode_logits(plain, tokens));
  const size_t V = model.config().vocab_size;
  KVCache cache = model.new_cache();
  const int before = 9;  // stepped, so that the cache holds what decode's steps wrote
  for (int t = 0; t < before; ++t) model.forward(&tokens[t], 1, cache, nullptr);
  std::vector<float> rows(3 * V);
  model.forward(tokens.data() + before, 3, cache, rows.data());
  set_exact_activations(true);
  for (size_t i = 0; i < rows.size(); ++i)
    ASSERT_EQ(std::bit_cast<uint32_t>(rows[i]), std::bit_cast<uint32_t>(steps[before * V + i]))
        << "row " << i / V;
}

}  // namespace whale::testing
