// The server's paged KV cache (a forward pass through pages gives what the contiguous cache
// gives; prefix blocks shared, reference-counted, evicted least recently released first) and
// its streaming text filters (stop strings, reasoning split).
#include "model/random_init.h"
#include "model/transformer.h"
#include "serve/paged_cache.h"
#include "test_util.h"
#include "text/stream_filters.h"

namespace whale {
namespace {

using serve::PagedCache;
using serve::SequenceBlocks;

TEST(PagedCache, ForwardThroughPagesEqualsContiguous) {
  whale::testing::TempDir dir;
  for (const char* preset : {"tiny", "tiny-qwen2"}) {
    auto r = whale::testing::run_whale(std::string("init --preset ") + preset +
                                       " --dtype f32 --out " + dir / preset);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto model = Model::load(dir / preset);
    const int V = model->config().vocab_size;
    std::vector<int> prompt;
    for (int i = 0; i < 37; ++i) prompt.push_back((i * 7 + 3) % V);
    // Contiguous: prefill 37, then two decode steps.
    KVCache flat = model->new_cache();
    std::vector<float> a(static_cast<size_t>(37) * V), a1(V), a2(V);
    model->forward(prompt.data(), 37, flat, a.data());
    int t1 = 5, t2 = 9;
    model->forward(&t1, 1, flat, a1.data());
    model->forward(&t2, 1, flat, a2.data());
    // Paged, blocks of 8: the prompt in chunks of 20 and 17, then the same decode steps.
    PagedCache cache(model->config(), 1 << 20, 8, true);
    SequenceBlocks seq;
    ASSERT_TRUE(cache.reserve(seq, 40));
    std::vector<float> b(static_cast<size_t>(20) * V), c(static_cast<size_t>(17) * V), b1(V), b2(V);
    model->forward(prompt.data(), 20, seq.cache, b.data());
    model->forward(prompt.data() + 20, 17, seq.cache, c.data());
    b.insert(b.end(), c.begin(), c.end());
    model->forward(&t1, 1, seq.cache, b1.data());
    model->forward(&t2, 1, seq.cache, b2.data());
    EXPECT_LT(whale::testing::relative_max_error(b, a), 1e-5) << preset;
    EXPECT_LT(whale::testing::relative_max_error(b1, a1), 1e-5) << preset;
    EXPECT_LT(whale::testing::relative_max_error(b2, a2), 1e-5) << preset;
  }
}

TEST(PagedCache, PrefixBlocksAreSharedCountedAndEvictedOldestFirst) {
  ModelConfig c;
  c.model_type = "deepseek_v3";
  c.num_hidden_layers = 1;
  c.kv_lora_rank = 4;
  c.qk_rope_head_dim = 4;
  const size_t block_bytes = 4 * 8 * sizeof(float);
  PagedCache cache(c, 6 * block_bytes, 4, true);
  ASSERT_EQ(cache.total_blocks(), 6);
  std::vector<int> a = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  SequenceBlocks s1;
  EXPECT_EQ(cache.attach_prefix(s1, a, 2), 0);
  ASSERT_TRUE(cache.reserve(s1, 10));
  EXPECT_EQ(cache.used_blocks(), 3);
  cache.publish(s1, a, 10);  // two full blocks
  EXPECT_EQ(cache.cached_blocks(), 2);

  // Same first 8 tokens: two blocks shared, no new memory for them.
  std::vector<int> b = {1, 2, 3, 4, 5, 6, 7, 8, 42};
  SequenceBlocks s2;
  EXPECT_EQ(cache.attach_prefix(s2, b, 2), 2);
  EXPECT_EQ(s2.cache.length, 8);
  EXPECT_EQ(cache.used_blocks(), 3);
  ASSERT_TRUE(cache.reserve(s2, 9));
  EXPECT_EQ(cache.used_blocks(), 4);
  // A different second block matches only the first.
  std::vector<int> d = {1, 2, 3, 4, 0, 0, 0, 0, 1};
  SequenceBlocks s3;
  EXPECT_EQ(cache.attach_prefix(s3, d, 2), 1);
  cache.release(s3);

  cache.release(s1);
  cache.release(s2);
  EXPECT_EQ(cache.used_blocks(), 0);
  EXPECT_EQ(cache.cached_blocks(), 2);  // still cached, evictable
  // Still found after release.
  SequenceBlocks s4;
  EXPECT_EQ(cache.attach_prefix(s4, a, 2), 2);
  cache.release(s4);
  // Filling the pool evicts them (the chain's tail first), never a referenced block.
  SequenceBlocks big;
  ASSERT_TRUE(cache.reserve(big, 20));  // 5 blocks: 4 free + 1 evicted
  EXPECT_EQ(cache.cached_blocks(), 1);
  SequenceBlocks s5;
  EXPECT_EQ(cache.attach_prefix(s5, a, 2), 1);  // the head survived
  EXPECT_FALSE(cache.reserve(big, 28));         // the pool is dry: the cached block is s5's now
  cache.release(s5);
  cache.release(big);
  EXPECT_EQ(cache.available_blocks(), 6);
}

TEST(TextStream, StopStringsAreHeldBackAndCut) {
  StopFilter f({"END", "\nUser:"});
  bool stopped = false;
  EXPECT_EQ(f.push("Hello E", stopped), "Hello ");
  EXPECT_EQ(f.push("N", stopped), "");
  EXPECT_EQ(f.push("x", stopped), "ENx");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(f.push(" done\nUs", stopped), " done");
  EXPECT_EQ(f.push("er: more", stopped), "");
  EXPECT_TRUE(stopped);
}

TEST(TextStream, ReasoningIsSplitFromTheAnswer) {
  ReasoningSplitter s(true);
  std::string reasoning, content;
  for (const char* piece : {"Let me", " think.</", "think>", "\n\nThe answer", " is 4."}) {
    auto d = s.push(piece);
    reasoning += d.reasoning;
    content += d.content;
  }
  auto d = s.finish();
  reasoning += d.reasoning;
  content += d.content;
  EXPECT_EQ(reasoning, "Let me think.");
  EXPECT_EQ(content, "The answer is 4.");

  ReasoningSplitter opens(false);
  auto d1 = opens.push("<thi");
  auto d2 = opens.push("nk>\nhmm</think>ok");
  EXPECT_EQ(d1.reasoning + d2.reasoning, "hmm");
  EXPECT_EQ(d1.content + d2.content, "ok");

  ReasoningSplitter plain(false);
  EXPECT_EQ(plain.push("no tags <think> here").content, "no tags <think> here");
}

TEST(TextStream, Utf8Validation) {
  EXPECT_TRUE(valid_utf8("plain ascii, é, 漢字, 🐋"));
  EXPECT_FALSE(valid_utf8("\xff"));
  EXPECT_FALSE(valid_utf8("\xc3"));          // truncated
  EXPECT_FALSE(valid_utf8("\xc0\xaf"));      // overlong
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));  // surrogate
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));
}

}  // namespace
}  // namespace whale
