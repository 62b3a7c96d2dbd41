// The training loop and its parts: AdamW, schedules, the scaling law, data, balancing, plots,
// and exact resumption after kill -9.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "base/plot.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "train/data.h"
#include "train/optimizer.h"

namespace whale {
namespace {

namespace fs = std::filesystem;
using testing::run_whale;
using testing::TempDir;

TEST(Optimizer, AdamWStepMatchesTheFormula) {
  ModelConfig c = preset_config("tiny");
  ParamStore store(c);
  store.init_random(1);
  std::vector<float> before(store.values(), store.values() + store.size());
  for (size_t i = 0; i < store.size(); ++i)
    store.grads()[i] = 0.001f * static_cast<float>(i % 7) - 0.002f;
  AdamWConfig config;
  config.clip_norm = 0;  // no clipping in this check
  AdamW adam(store, config);
  const float lr = 0.01f;
  adam.step(store, lr);
  for (const Param& p : store.params()) {
    for (size_t k = 0; k < std::min<size_t>(p.size, 5); ++k) {
      size_t i = p.offset + k;
      float g = store.grads()[i];
      float expected = before[i];
      if (p.trainable) {
        // First step: m̂ = g, v̂ = g², update = g/(|g| + eps).
        float update = g / (std::fabs(g) + config.eps);
        expected = before[i] - lr * (update + (p.weight_decay ? 0.1f * before[i] : 0.0f));
      }
      ASSERT_NEAR(store.values()[i], expected, 1e-6f) << p.name;
    }
  }
  // No decay and no AdamW on what the brief exempts.
  EXPECT_FALSE(store.param("model.norm.weight")->weight_decay);
  EXPECT_FALSE(store.param("model.layers.1.mlp.gate.e_score_correction_bias")->trainable);
  EXPECT_TRUE(store.param("model.layers.1.mlp.experts.0.up_proj.weight")->weight_decay);
}

TEST(Optimizer, ClippingScalesTheGlobalNorm) {
  ModelConfig c = preset_config("tiny-llama");
  ParamStore a(c), b(c);
  a.init_random(2);
  b.init_random(2);
  for (size_t i = 0; i < a.size(); ++i) a.grads()[i] = b.grads()[i] = 0.5f;
  AdamWConfig clip, no_clip;
  clip.clip_norm = 1.0f;
  no_clip.clip_norm = 0.0f;
  AdamW adam_a(a, clip), adam_b(b, no_clip);
  float norm = adam_a.step(a, 0.01f);
  size_t trainable = 0;
  for (const Param& p : a.params()) trainable += p.trainable ? p.size : 0;
  EXPECT_NEAR(norm, 0.5f * std::sqrt(static_cast<float>(trainable)), norm * 1e-4);
  EXPECT_NEAR(adam_b.step(b, 0.01f), norm, norm * 1e-6);
  // Adam's first step is scale-invariant, so clipping shows only through eps: equal here.
  EXPECT_NEAR(a.values()[100], b.values()[100], 1e-5f);
}

TEST(Schedule, DeepSeekMultiStepAndCosine) {
  EXPECT_FLOAT_EQ(learning_rate(Schedule::kMultiStep, 0, 1000, 10, 1.0f), 0.1f);
  EXPECT_FLOAT_EQ(learning_rate(Schedule::kMultiStep, 9, 1000, 10, 1.0f), 1.0f);
  EXPECT_FLOAT_EQ(learning_rate(Schedule::kMultiStep, 799, 1000, 10, 1.0f), 1.0f);
  EXPECT_FLOAT_EQ(learning_rate(Schedule::kMultiStep, 800, 1000, 10, 1.0f), 0.316f);
  EXPECT_FLOAT_EQ(learning_rate(Schedule::kMultiStep, 900, 1000, 10, 1.0f), 0.1f);
  EXPECT_NEAR(learning_rate(Schedule::kCosine, 1000, 1000, 0, 1.0f), 0.1f, 1e-6);
  EXPECT_NEAR(learning_rate(Schedule::kCosine, 500, 1000, 0, 1.0f), 0.55f, 1e-6);
  // DeepSeek LLM's fit: at C = 1e20 FLOPs, B ≈ 0.292·1e20^0.3271, η ≈ 0.3118·1e20^-0.125.
  ScalingLawChoice s = scaling_law(1e20);
  EXPECT_NEAR(s.batch_tokens, 0.2920 * std::pow(1e20, 0.3271), 1);
  EXPECT_NEAR(s.learning_rate, 0.3118 * std::pow(1e20, -0.125), 1e-9);
}

TEST(Data, SynthPrepareRoundTripsThroughTheTokenizer) {
  TempDir tmp;
  auto r = run_whale("data synth --bytes 50000 --seed 3 --out " + (tmp / "d"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  TokenData d = TokenData::load(tmp / "d");
  EXPECT_EQ(d.vocab_size, kByteVocabSize);
  EXPECT_EQ(d.bos_token_id, 256);
  EXPECT_EQ(d.eos_token_id, 257);
  EXPECT_GT(d.val.size(), 0u);
  // Every document is BOS … EOS and decodes back to the corpus text.
  auto tokenizer = text::Tokenizer::load(tmp / "d/tokenizer");
  std::string corpus = read_file(tmp / "d/corpus.txt");
  std::vector<int> doc;
  int checked = 0;
  for (uint32_t t : d.train) {
    if (t == 256)
      doc.clear();
    else if (t == 257) {
      std::string text = tokenizer->decode(doc);
      ASSERT_NE(corpus.find(text), std::string::npos) << text;
      ++checked;
    } else {
      doc.push_back(static_cast<int>(t));
    }
  }
  EXPECT_GT(checked, 100);
  EXPECT_GT(unigram_entropy(d.train), 2.0);
  // Batches are a pure function of (seed, step).
  std::vector<int> a(4 * 16), b(4 * 16);
  sample_batch(d.train, 4, 16, 7, 11, a.data());
  sample_batch(d.train, 4, 16, 7, 11, b.data());
  EXPECT_EQ(a, b);
  sample_batch(d.train, 4, 16, 7, 12, b.data());
  EXPECT_NE(a, b);
}

TEST(Data, BadDataFoldersGetClearErrors) {
  TempDir tmp;
  auto r = run_whale("train --data " + (tmp / "none") + " --preset tiny --out " + (tmp / "run"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("no data.json"), std::string::npos) << r.output;
  ASSERT_EQ(run_whale("data synth --bytes 20000 --out " + (tmp / "d")).exit_code, 0);
  r = run_whale("train --data " + (tmp / "d") + " --preset tiny --vocab-size 100 --out " +
                (tmp / "run"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("smaller than the data's"), std::string::npos) << r.output;
}

TEST(Plot, WritesAValidPng) {
  TempDir tmp;
  write_line_plot(tmp / "p.png", {{"a", {0, 1, 2}, {3, 1, 2}, 0xff0000}},
                  {"t", "x", "y", 320, 200, false});
  std::string png = read_file(tmp / "p.png");
  ASSERT_GT(png.size(), 200u * 320 * 3);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  EXPECT_EQ(static_cast<unsigned char>(png[18]) * 256 + static_cast<unsigned char>(png[19]), 320);
  EXPECT_EQ(png.substr(png.size() - 8, 4), "IEND");
}

std::vector<std::string> log_columns_without_speed(const std::string& path) {
  std::vector<std::string> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    // Drop column 9 (tokens/s), which is timing.
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string item; std::getline(ss, item, ',');) f.push_back(item);
    if (line.back() == ',') f.push_back("");
    if (f.size() > 9) f.erase(f.begin() + 9);
    std::string joined;
    for (auto& x : f) joined += x + ",";
    rows.push_back(joined);
  }
  return rows;
}

// Kill -9 at a random moment, --resume, and the logged trajectory (losses, learning rates,
// gradient norms, validation, expert loads) is bit-for-bit the uninterrupted run's.
TEST(Trainer, ResumeAfterKillReplaysExactly) {
  TempDir tmp;
  ASSERT_EQ(run_whale("data synth --bytes 200000 --out " + (tmp / "d")).exit_code, 0);
  const std::string args = "--threads 2 train --data " + (tmp / "d") +
                           " --preset tiny --steps 60 --batch 8 --seq-len 64 --eval-every 10 "
                           "--save-every 7 --bias-gamma 0.01 --balance-alpha 0.001 --seed 5 --out ";
  auto started = std::chrono::steady_clock::now();
  auto r = run_whale(args + (tmp / "straight"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const double straight_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();

  // The interrupted run, killed at a random moment of its expected duration.
  std::random_device device;
  std::mt19937 rng(device());
  const int delay_ms = static_cast<int>(straight_ms * (0.1 + 0.8 * (rng() % 1000) / 1000.0));
  pid_t pid = fork();
  if (pid == 0) {
    std::string command =
        std::string(WHALE_BINARY) + " " + args + (tmp / "killed") + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), nullptr);
    _exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  // Nothing half-written: every checkpoint that exists is complete.
  if (fs::exists(tmp / "killed/checkpoints"))
    for (auto& e : fs::directory_iterator(tmp / "killed/checkpoints"))
      if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0) {
        EXPECT_TRUE(fs::exists(e.path() / "model.safetensors")) << e.path();
        EXPECT_TRUE(fs::exists(e.path() / "optimizer.safetensors")) << e.path();
        EXPECT_TRUE(fs::exists(e.path() / "trainer_state.json")) << e.path();
      }
  r = run_whale(args + (tmp / "killed") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << "killed after " << delay_ms << " ms\n" << r.output;
  auto a = log_columns_without_speed(tmp / "straight/log.csv");
  auto b = log_columns_without_speed(tmp / "killed/log.csv");
  ASSERT_EQ(a.size(), 61u);
  EXPECT_EQ(a, b) << "killed after " << delay_ms << " ms";
  EXPECT_EQ(read_file(tmp / "straight/model/model.safetensors"),
            read_file(tmp / "killed/model/model.safetensors"));
}

// A few hundred steps of a tiny V3 model (MLA, MoE, MTP) on the synthetic corpus: the
// validation loss falls far below the corpus' unigram entropy, the aux-loss-free bias moves,
// and the run folder has everything it promises.
TEST(Trainer, LearnsTheSyntheticCorpus) {
  TempDir tmp;
  ASSERT_EQ(run_whale("data synth --bytes 400000 --out " + (tmp / "d")).exit_code, 0);
  auto r = run_whale("train --data " + (tmp / "d") +
                     " --preset tiny --steps 150 --batch 8 --seq-len 64 --lr 5e-3 --eval-every 50 "
                     "--save-every 50 --bias-gamma 0.01 --out " +
                     (tmp / "run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f :
       {"log.csv", "experts.csv", "loss.png", "experts.png", "run.json", "model/config.json",
        "model/model.safetensors", "model/tokenizer.json", "checkpoints/latest"})
    EXPECT_TRUE(fs::exists(tmp / ("run/" + std::string(f)))) << f;
  TokenData d = TokenData::load(tmp / "d");
  double entropy = unigram_entropy(d.train);
  std::ifstream in(tmp / "run/log.csv");
  std::string line, last_val;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string item; std::getline(ss, item, ',');) f.push_back(item);
    if (f.size() > 6 && !f[6].empty() && f[0] != "step") last_val = f[6];
  }
  ASSERT_FALSE(last_val.empty());
  EXPECT_LT(std::stod(last_val), entropy - 1.0) << "unigram entropy " << entropy;
  // The routing bias moved by ±γ steps (it starts at zero).
  ParamStore store(ModelConfig::load(tmp / "run/model"));
  store.load(Checkpoint(tmp / "run/model"));
  const Param* bias = store.param("model.layers.1.mlp.gate.e_score_correction_bias");
  double moved = 0;
  for (size_t i = 0; i < bias->size; ++i) moved += std::fabs(store.values()[bias->offset + i]);
  EXPECT_GT(moved, 0.01);
  // The trained model generates through the KV cache and its tokenizer.
  r = run_whale("generate --model " + (tmp / "run/model") + " --prompt \"Ada has \" -n 20");
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // --train mtp --mtp-target model: the MTP module learns the main model's predictions; every
  // other tensor stays exactly as it was, and the draft agrees with the main model more often.
  r = run_whale("train --data " + (tmp / "d") + " --train mtp --preset tiny --out " + (tmp / "x"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("pass --model"), std::string::npos) << r.output;
  const auto last_val_agreement = [&](const std::string& log) {
    std::ifstream in(log);
    std::string line, last;
    std::getline(in, line);
    while (std::getline(in, line)) {
      const size_t comma = line.rfind(',');
      if (comma + 1 < line.size()) last = line.substr(comma + 1);
    }
    return last.empty() ? NAN : std::stod(last);
  };
  const double before = last_val_agreement(tmp / "run/log.csv");
  r = run_whale("train --data " + (tmp / "d") + " --model " + (tmp / "run/model") +
                " --train mtp --mtp-target model --mtp-weight 1 --steps 60 --batch 8 --seq-len 64 "
                "--lr 3e-3 --eval-every 30 --save-every 30 --out " +
                (tmp / "mtp"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("MTP draft agrees"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(tmp / "mtp/mtp.png"));
  const double after = last_val_agreement(tmp / "mtp/log.csv");
  EXPECT_GT(after, before + 0.02) << "validation agreement before " << before;
  // The same tune against the data (the token after next) does not raise it as much: the main
  // model's own prediction is what a greedy draft has to match.
  r = run_whale("train --data " + (tmp / "d") + " --model " + (tmp / "run/model") +
                " --train mtp --mtp-target data --mtp-weight 1 --steps 60 --batch 8 --seq-len 64 "
                "--lr 3e-3 --eval-every 30 --save-every 30 --out " +
                (tmp / "mtp_data"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(after, last_val_agreement(tmp / "mtp_data/log.csv") + 0.02);
  ParamStore tuned(ModelConfig::load(tmp / "mtp/model"));
  tuned.load(Checkpoint(tmp / "mtp/model"));
  const std::string mtp_prefix = "model.layers." + std::to_string(store.config().num_hidden_layers);
  int changed = 0;
  for (const Param& p : store.params()) {
    const Param* q = tuned.param(p.name);
    ASSERT_NE(q, nullptr) << p.name;
    const bool same = std::equal(store.values() + p.offset, store.values() + p.offset + p.size,
                                 tuned.values() + q->offset);
    if (p.name.rfind(mtp_prefix + ".", 0) == 0)
      changed += !same;
    else
      EXPECT_TRUE(same) << p.name << " changed while only the MTP module trains";
  }
  EXPECT_GT(changed, 5);
  // Resuming that run without --train mtp would train the whole model: a clear error instead.
  r = run_whale(
      "train --data " + (tmp / "d") + " --model " + (tmp / "run/model") +
      " --mtp-target model --mtp-weight 1 --steps 90 --batch 8 --seq-len 64 --resume --out " +
      (tmp / "mtp"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("resume it with the same options"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace whale
