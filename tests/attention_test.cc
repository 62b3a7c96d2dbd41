// MLA's two forms on prompts long enough that the naive form works in several blocks of rows
// (model/mla.cc: sgemm per head and block): its logits against the absorbed form's, in one pass
// and with the prompt split into two chunks (the second starting at a cached position), with
// V3.2's sparse masks too.
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

TEST(Attention, NaivePrefillInRowBlocksMatchesAbsorbed) {
  whale::testing::TempDir dir;
  for (const char* preset : {"tiny", "tiny-v32"}) {
    auto r = whale::testing::run_whale(std::string("init --preset ") + preset +
                                       " --dtype f32 --out " + dir / preset);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto model = Model::load(dir / preset);
    const int V = model->config().vocab_size;
    std::vector<int> tokens;
    for (int i = 0; i < 150; ++i) tokens.push_back((i * 37 + 11) % V);
    // 150 rows: blocks of 64, 64 and 22; chunks of 90 and 60 (blocks start at cached position 90).
    const auto absorbed = prefill(*model, tokens, {150}, AttentionPath::kAbsorbed);
    for (const std::vector<int>& chunks : {std::vector<int>{150}, std::vector<int>{90, 60}}) {
      const auto naive = prefill(*model, tokens, chunks, AttentionPath::kNaive);
      EXPECT_LT(whale::testing::relative_max_error(naive, absorbed), 1e-4)
          << preset << " in " << chunks.size() << " chunk(s)";
    }
  }
}

}  // namespace
}  // namespace whale
