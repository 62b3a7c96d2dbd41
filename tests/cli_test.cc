// The command line, end to end through the binary: init → info → logits → generate for every
// architecture and weight type, and clear one-line errors for bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "base/npy.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::relative_max_error;
using testing::run_whale;
using testing::TempDir;

struct Case {
  std::string preset, dtype;
};

class InitRoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(InitRoundTrip, PrefillDecodeAndBothMlaFormsAgree) {
  const Case& k = GetParam();
  TempDir tmp;
  std::string dir = tmp / "model";
  auto r =
      run_whale("init --preset " + k.preset + " --dtype " + k.dtype + " --seed 3 --out " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(std::filesystem::exists(dir + "/config.json"));
  ASSERT_TRUE(std::filesystem::exists(dir + "/model.safetensors"));

  r = run_whale("info --json --model " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto info = nlohmann::json::parse(r.output);
  ModelConfig c = preset_config(k.preset);
  EXPECT_EQ(info["kv_cache_bytes_per_token"].get<size_t>(), kv_cache_bytes_per_token(c));
  if (c.is_deepseek()) {
    size_t expected = static_cast<size_t>(c.num_hidden_layers) *
                      (c.kv_lora_rank + c.qk_rope_head_dim) * sizeof(float);
    if (c.has_indexer()) expected += c.num_hidden_layers * (c.index_head_dim + 4);
    EXPECT_EQ(info["kv_cache_bytes_per_token"].get<size_t>(), expected);
  }
  EXPECT_GT(info["params_total"].get<size_t>(), info["params_active"].get<size_t>() / 2);

  // 40 tokens: longer than the tiny V3.2 preset's index_topk (16), so sparsity is exercised.
  std::string tokens;
  for (int i = 0; i < 40; ++i)
    tokens += (i ? "," : "") + std::to_string((i * 37 + 5) % c.vocab_size);
  std::vector<std::string> variants = {"", "--step"};
  if (c.is_deepseek()) {
    variants.push_back("--attention absorbed");
    variants.push_back("--step --attention naive");
  }
  std::vector<float> reference;
  for (const std::string& v : variants) {
    std::string out = tmp / "l.npy";
    r = run_whale("logits --model " + dir + " --tokens " + tokens + " --out " + out + " " + v);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    NpyArray a = read_npy(out);
    ASSERT_EQ(a.shape, (std::vector<size_t>{40, static_cast<size_t>(c.vocab_size)}));
    if (reference.empty())
      reference = a.data;
    else
      EXPECT_LT(relative_max_error(a.data, reference), 1e-5) << v;
  }
  if (c.has_mtp()) {
    std::vector<float> mtp_reference;
    for (std::string v : {"--mtp", "--mtp --step"}) {
      r = run_whale("logits --model " + dir + " --tokens " + tokens + " --out " + (tmp / "m.npy") +
                    " " + v);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      NpyArray a = read_npy(tmp / "m.npy");
      ASSERT_EQ(a.shape, (std::vector<size_t>{39, static_cast<size_t>(c.vocab_size)}));
      if (mtp_reference.empty())
        mtp_reference = a.data;
      else
        EXPECT_LT(relative_max_error(a.data, mtp_reference), 1e-5);
    }
  }

  // Greedy generation is deterministic and continues what the logits say.
  r = run_whale("generate --model " + dir + " --tokens 5,6,7 -n 8 --ignore-eos");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto again = run_whale("generate --model " + dir + " --tokens 5,6,7 -n 8 --ignore-eos");
  EXPECT_EQ(r.output, again.output);
  std::vector<int> ids;
  for (std::istringstream in(r.output); in.good();) {
    int id;
    if (in >> id) ids.push_back(id);
  }
  ASSERT_EQ(ids.size(), 8u) << r.output;
  r = run_whale("logits --model " + dir + " --tokens 5,6,7 --out " + (tmp / "g.npy"));
  NpyArray g = read_npy(tmp / "g.npy");
  const float* last = g.data.data() + 2 * c.vocab_size;
  EXPECT_EQ(ids[0], std::max_element(last, last + c.vocab_size) - last);
  // Sampling with a seed is reproducible too.
  r = run_whale("generate --model " + dir +
                " --tokens 5,6,7 -n 8 --temperature 1 --top-p 0.9 --top-k 50 --seed 4");
  again = run_whale("generate --model " + dir +
                    " --tokens 5,6,7 -n 8 --temperature 1 --top-p 0.9 --top-k 50 --seed 4");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, again.output);
}

INSTANTIATE_TEST_SUITE_P(Presets, InitRoundTrip,
                         ::testing::Values(Case{"tiny", "bf16"}, Case{"tiny", "fp8"},
                                           Case{"tiny", "f32"}, Case{"tiny-v2", "bf16"},
                                           Case{"tiny-v32", "bf16"}, Case{"tiny-v32", "fp8"},
                                           Case{"tiny-qwen2", "bf16"}, Case{"tiny-llama", "f32"}),
                         [](const auto& info) {
                           std::string name = info.param.preset + "_" + info.param.dtype;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

TEST(Cli, ShardedInitLoadsAndMatchesSingleFile) {
  TempDir tmp;
  ASSERT_EQ(run_whale("init --preset tiny --seed 9 --out " + (tmp / "one")).exit_code, 0);
  auto r = run_whale("init --preset tiny --seed 9 --shard-gb 0.0002 --out " + (tmp / "many"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(tmp / "many/model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(tmp / "many/model.safetensors"));
  for (std::string d : {"one", "many"}) {
    r = run_whale("logits --model " + (tmp / d) + " --tokens 1,2,3 --out " + (tmp / (d + ".npy")));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  EXPECT_EQ(read_npy(tmp / "one.npy").data, read_npy(tmp / "many.npy").data);
}

TEST(Cli, BadInputGetsOneLineErrorAndExitCodeOne) {
  TempDir tmp;
  ASSERT_EQ(run_whale("init --preset tiny --out " + (tmp / "m")).exit_code, 0);
  struct Bad {
    std::string args, message;
  };
  std::vector<Bad> cases = {
      {"info --model " + (tmp / "nothing"), "not a directory"},
      {"info --model " + tmp.path.string(), "no config.json"},
      {"logits --model " + (tmp / "m") + " --tokens 1,x,3 --out " + (tmp / "o.npy"),
       "bad token id 'x'"},
      {"logits --model " + (tmp / "m") + " --tokens 1,99999 --out " + (tmp / "o.npy"),
       "token id 99999 at position 1 is outside the vocabulary"},
      {"generate --model " + (tmp / "m") + " --tokens 1 --top-p 0", "top-p"},
      {"init --preset nope --out " + (tmp / "x"), "unknown preset 'nope'"},
      {"logits --model " + (tmp / "m") + " --tokens 1 --mtp --out " + (tmp / "o.npy"),
       "at least two"},
  };
  for (const Bad& b : cases) {
    auto r = run_whale(b.args);
    EXPECT_EQ(r.exit_code, 1) << b.args << "\n" << r.output;
    EXPECT_NE(r.output.find(b.message), std::string::npos) << b.args << "\n" << r.output;
  }
  // A model whose weights file is truncated: an error naming the file, not a crash.
  std::filesystem::resize_file(tmp / "m/model.safetensors", 1000);
  auto r = run_whale("info --model " + (tmp / "m"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("model.safetensors"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp / "o.npy"));
}

TEST(Cli, BenchKernelsReportsEveryFormatAndTokenCount) {
  // Small streamed passes keep it quick; the figures only have to be measured, not fast.
  auto r = run_whale("bench --kernels --json --stream-mib 16 --repeats 1 --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_GT(j["bandwidth_gbps"].get<double>(), 0);
  std::set<std::pair<std::string, int>> seen;
  for (const auto& k : j["kernels"]) {
    seen.insert({k["format"].get<std::string>(), k["tokens"].get<int>()});
    for (const char* key : {"cache_gbps", "memory_gbps", "bandwidth_gbps"}) {
      const double v = k[key].get<double>();
      EXPECT_TRUE(std::isfinite(v) && v > 0) << key << " " << k.dump();
    }
    EXPECT_NEAR(k["memory_fraction"].get<double>(),
                k["memory_gbps"].get<double>() / k["bandwidth_gbps"].get<double>(), 1e-9);
  }
  for (const char* format : {"f32", "bf16", "fp8", "q8", "q4"})
    for (int tokens : {1, 2, 4})
      EXPECT_TRUE(seen.count({format, tokens})) << format << " " << tokens;
  EXPECT_EQ(seen.size(), 15u);

  // Options of a model's benchmark are errors with --kernels, and --stream-mib without it.
  for (const char* bad : {"bench --kernels --model /nonexistent", "bench --kernels --batch 4",
                          "bench --model /nonexistent --stream-mib 64"}) {
    r = run_whale(bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_NE(r.output.find("--"), std::string::npos) << bad << "\n" << r.output;
  }
  r = run_whale("bench");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--model DIR is required"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace whale
