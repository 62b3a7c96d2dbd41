// A prompt's attention by sgemm per head and block of rows (model/attention_block.cc), on prompts
// long enough for several blocks, in one pass and split into two chunks (the second starting at a
// cached position): MLA's naive form against its absorbed form — whose rows see up to three of
// its chunks of positions — with V3.2's sparse masks too; the dense students' against their
// one-token steps.
#include "model/transformer.h"
#include "test_util.h"

namespace whale {
namespace {

std::vector<float> prefill(const Model& model, const std::vector<int>& tokens,
                           const std::vector<int>& chunks, AttentionPath path) {
  const int V = model.config().vocab_size;
  ForwardOptions options;
  options.attention = path;
  KVCache cache = model.new_cache();
  std::vector<float> logits(tokens.size() * V);
  int at = 0;
  for (int n : chunks) {
    model.forward(tokens.data() + at, n, cache, logits.data() + static_cast<size_t>(at) * V,
                  nullptr, options);
    at += n;
  }
  EXPECT_EQ(at, static_cast<int>(tokens.size()));
  return logits;
}

// A random f32 model of the preset (`whale init`, in dir) and a prompt of n tokens for it.
struct Prompted {
  decltype(Model::load("")) model;
  std::vector<int> tokens;
};
Prompted init_with_prompt(const whale::testing::TempDir& dir, const char* preset, int n) {
  auto r = whale::testing::run_whale(std::string("init --preset ") + preset +
                                     " --dtype f32 --out " + dir / preset);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  Prompted p{Model::load(dir / preset), {}};
  for (int i = 0; i < n; ++i) p.tokens.push_back((i * 37 + 11) % p.model->config().vocab_size);
  return p;
}

TEST(Attention, NaivePrefillInRowBlocksMatchesAbsorbed) {
  whale::testing::TempDir dir;
  for (const char* preset : {"tiny", "tiny-v32"}) {
    const auto [model, tokens] = init_with_prompt(dir, preset, 600);
    // 600 rows: naive blocks of 64 rows; the absorbed form's rows see up to 5 chunks of 128
    // positions (combined); in two chunks of the prompt the second's blocks start at position 350.
    const auto absorbed = prefill(*model, tokens, {600}, AttentionPath::kAbsorbed);
    for (const std::vector<int>& chunks : {std::vector<int>{600}, std::vector<int>{350, 250}}) {
      const auto naive = prefill(*model, tokens, chunks, AttentionPath::kNaive);
      EXPECT_LT(whale::testing::relative_max_error(naive, absorbed), 1e-4)
          << preset << " in " << chunks.size() << " chunk(s)";
    }
  }
}

// The dense students (Qwen2, Llama): a prompt's attention by blocks of rows against the same
// tokens one at a time (each a single row, attended position by position).
TEST(Attention, DensePrefillInRowBlocksMatchesStepByStep) {
  whale::testing::TempDir dir;
  for (const char* preset : {"tiny-qwen2", "tiny-llama"}) {
    const auto [model, tokens] = init_with_prompt(dir, preset, 150);
    const auto stepped =
        prefill(*model, tokens, std::vector<int>(tokens.size(), 1), AttentionPath::kAuto);
    for (const std::vector<int>& chunks : {std::vector<int>{150}, std::vector<int>{90, 60}}) {
      const auto blocks = prefill(*model, tokens, chunks, AttentionPath::kAuto);
      EXPECT_LT(whale::testing::relative_max_error(blocks, stepped), 1e-4)
          << preset << " in " << chunks.size() << " chunk(s)";
    }
  }
}

}  // namespace
}  // namespace whale
