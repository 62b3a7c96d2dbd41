// BPE training: the tokenizer whale learns from tests/text/bpe/corpus.* is byte-identical to
// the committed one, which Hugging Face's library loads and encodes the held-out documents with
// to the committed ids (tests/text/make_bpe_fixtures.mjs); training, encoding and decoding
// round-trip; the merge rule on hand-made corpora.
#include <omp.h>

#include <fstream>
#include <map>
#include <random>

#include "base/error.h"
#include "test_util.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"

namespace whale::text {
namespace {

using nlohmann::json;
using whale::testing::run_whale;
using whale::testing::TempDir;

std::string bpe_dir() {
  return whale::testing::source_dir() + "/tests/text/bpe";
}

std::vector<std::string> jsonl_texts(const std::string& path) {
  std::vector<std::string> texts;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) texts.push_back(json::parse(line)["text"].get<std::string>());
  return texts;
}

BpeModel train_on(const std::vector<std::string>& texts, int vocab_size,
                  int64_t min_frequency = 2) {
  BpeTrainer trainer(false);
  for (const auto& t : texts) trainer.add_text(t);
  BpeTrainOptions options;
  options.vocab_size = vocab_size;
  options.min_frequency = min_frequency;
  options.progress = false;
  return trainer.train(options);
}

// The merges as "left right" in raw bytes.
std::vector<std::string> merge_strings(const BpeModel& m) {
  std::vector<std::string> out;
  for (auto [a, b] : m.merges) out.push_back(m.tokens[a] + " " + m.tokens[b]);
  return out;
}

TEST(BpeTrain, FixtureIsByteIdenticalAndAgreesWithHuggingFace) {
  TempDir dir;
  auto r = run_whale("tokenizer train --quiet --input " + bpe_dir() + "/corpus.txt " + bpe_dir() +
                     "/corpus.jsonl --vocab-size 1000 --out " + dir / "tok");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file(dir / "tok/tokenizer.json"),
            read_file(bpe_dir() + "/expected/tokenizer.json"));
  EXPECT_EQ(read_file(dir / "tok/tokenizer_config.json"),
            read_file(bpe_dir() + "/expected/tokenizer_config.json"));

  auto tokenizer = Tokenizer::load(bpe_dir() + "/expected");
  EXPECT_EQ(tokenizer->vocab_size(), 1000);
  EXPECT_EQ(tokenizer->bos_id(), 0);
  EXPECT_EQ(tokenizer->eos_id(), 1);
  std::vector<std::string> heldout = jsonl_texts(bpe_dir() + "/heldout.jsonl");
  std::ifstream ids_in(bpe_dir() + "/heldout_ids.jsonl");
  size_t n = 0;
  for (std::string line; std::getline(ids_in, line); ++n) {
    ASSERT_LT(n, heldout.size());
    auto expected = json::parse(line)["ids"].get<std::vector<int>>();
    std::vector<int> ids = tokenizer->encode(heldout[n]);
    EXPECT_EQ(ids, expected) << "held-out document " << n << ": " << heldout[n];
    EXPECT_EQ(tokenizer->decode(ids), heldout[n]);
  }
  EXPECT_EQ(n, heldout.size());
}

TEST(BpeTrain, EveryTrainingDocumentRoundTrips) {
  auto tokenizer = Tokenizer::load(bpe_dir() + "/expected");
  std::vector<std::string> docs = jsonl_texts(bpe_dir() + "/corpus.jsonl");
  docs.push_back(read_file(bpe_dir() + "/corpus.txt"));
  size_t tokens = 0, bytes = 0;
  for (const auto& d : docs) {
    std::vector<int> ids = tokenizer->encode(d);
    EXPECT_EQ(tokenizer->decode(ids), d);
    tokens += ids.size();
    bytes += d.size();
  }
  EXPECT_LT(tokens * 2, bytes);  // the merges compress the text they were learned from
}

TEST(BpeTrain, AllBytesAndSpecialTokensArePresent) {
  BpeModel m = train_on({"hello hello hello world"}, 300);
  ASSERT_GE(m.tokens.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(m.tokens[b], std::string(1, static_cast<char>(b)));
  auto tokenizer = Tokenizer::from_json(bpe_tokenizer_json(m), bpe_tokenizer_config_json());
  EXPECT_EQ(tokenizer->token_to_id(kBpeBosToken), 0);
  EXPECT_EQ(tokenizer->token_to_id(kBpeEosToken), 1);
  EXPECT_TRUE(tokenizer->is_special(0));
  // Bytes the corpus never had, invalid UTF-8 included, still encode.
  std::string odd = "\x01\xff\xfe \xe4\xb8\x80 Ω";
  std::vector<int> ids = tokenizer->encode(odd);
  EXPECT_EQ(tokenizer->decode(ids), "\x01\xef\xbf\xbd\xef\xbf\xbd \xe4\xb8\x80 Ω");
  // Special tokens in the text are kept whole and are not learned from.
  std::vector<int> with_eos = tokenizer->encode("hi<｜end▁of▁sentence｜>");
  EXPECT_EQ(with_eos.back(), 1);
}

TEST(BpeTrain, MergesTheMostFrequentPairFirst) {
  // Pre-tokens: "aaab" ×1, " aaab" ×2, " ab" ×1. (a,a) occurs 2×3 = 6 times, (a,b) 4,
  // (' ',a) 3: "a a" first, leaving [aa a b]; then (a,b) 4 beats (aa,a) 3; then (aa,ab) 3.
  BpeModel m = train_on({"aaab aaab aaab ab"}, kBpeFirstMergedId + 3);
  std::vector<std::string> merges = merge_strings(m);
  ASSERT_EQ(merges.size(), 3u);
  EXPECT_EQ(merges[0], "a a");
  EXPECT_EQ(merges[1], "a b");
  EXPECT_EQ(merges[2], "aa ab");
}

TEST(BpeTrain, TiesGoToTheSmallestSpelling) {
  // Pre-tokens "zy", " xw", " zy", " xw": (z,y), (' ',x) and (x,w) all occur twice, and
  // the smallest left spelling, ' ' (0x20), wins.
  BpeModel m = train_on({"zy xw zy xw"}, kBpeFirstMergedId + 10);
  std::vector<std::string> merges = merge_strings(m);
  ASSERT_GE(merges.size(), 2u);
  EXPECT_EQ(merges[0], "  x");
}

TEST(BpeTrain, StopsAtMinFrequencyAndVocabSize) {
  BpeModel few = train_on({"abcdef"}, 1000);  // every pair occurs once
  EXPECT_TRUE(few.merges.empty());
  BpeModel once = train_on({"abcdef"}, 1000, 1);
  EXPECT_EQ(once.merges.size(), 5u);
  EXPECT_EQ(once.tokens.back(), "abcdef");
  BpeModel capped = train_on({"abcdef abcdef"}, kBpeFirstMergedId + 2);
  EXPECT_EQ(capped.vocab_size(), kBpeFirstMergedId + 2);
  EXPECT_THROW(train_on({"x"}, 100), Error);
}

TEST(BpeTrain, RandomCorporaRoundTripAndAgreeWithASlowTrainer) {
  // A direct implementation of the definition: recount every pair after every merge.
  auto slow = [](const std::map<std::string, int64_t>& words, size_t merges_wanted) {
    std::vector<std::pair<std::vector<std::string>, int64_t>> w;
    for (auto& [s, c] : words) {
      std::vector<std::string> sym;
      for (char ch : s) sym.push_back(std::string(1, ch));
      w.push_back({sym, c});
    }
    std::vector<std::string> out;
    while (out.size() < merges_wanted) {
      std::map<std::pair<std::string, std::string>, int64_t> counts;
      for (auto& [sym, c] : w)
        for (size_t i = 0; i + 1 < sym.size(); ++i) counts[{sym[i], sym[i + 1]}] += c;
      std::pair<std::string, std::string> best;
      int64_t best_count = 0;
      for (auto& [p, c] : counts)  // map order: the smallest spelling wins ties
        if (c > best_count) best = p, best_count = c;
      if (best_count < 2) break;
      out.push_back(best.first + " " + best.second);
      for (auto& [sym, c] : w) {
        std::vector<std::string> next;
        for (size_t i = 0; i < sym.size(); ++i) {
          if (i + 1 < sym.size() && sym[i] == best.first && sym[i + 1] == best.second) {
            next.push_back(best.first + best.second);
            ++i;
          } else {
            next.push_back(sym[i]);
          }
        }
        sym = next;
      }
    }
    return out;
  };
  std::mt19937 rng(7);
  for (int trial = 0; trial < 12; ++trial) {
    std::string text;
    std::map<std::string, int64_t> words;
    for (int i = 0; i < 200; ++i) {
      std::string word = i ? " " : "";
      int len = 1 + rng() % 6;
      for (int j = 0; j < len; ++j) word += "abc"[rng() % (trial % 2 ? 2 : 3)];
      text += word;
      words[word]++;
    }
    BpeTrainer trainer(false);
    trainer.add_text(text);
    BpeTrainOptions options;
    options.vocab_size = kBpeFirstMergedId + 60;
    options.progress = false;
    BpeModel m = trainer.train(options);
    std::vector<std::string> got = merge_strings(m);
    std::vector<std::string> want = slow(words, got.size() + 1);
    if (m.vocab_size() < options.vocab_size) {
      EXPECT_EQ(got, want) << "trial " << trial;
    } else {
      want.resize(std::min(want.size(), got.size()));
      EXPECT_EQ(got, want) << "trial " << trial;
    }
    auto tokenizer = Tokenizer::from_json(bpe_tokenizer_json(m), bpe_tokenizer_config_json());
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(text)), text);
  }
}

TEST(BpeTrain, PlainTextFilesAreCountedAsOneText) {
  // Over 4 MiB, so add_file reads it in two batches, each cut in one part per thread; the
  // cuts are only at newlines where the pre-tokenizer splits anyway, so the counts equal those
  // of the whole text at once.
  std::string base = read_file(bpe_dir() + "/corpus.txt");
  std::string text;
  for (int i = 0; text.size() < (9u << 19); ++i)
    text += base.substr(0, 1000 + (i * 7919) % (base.size() - 1000)) + (i % 3 ? "\n" : "\n \n\t");
  TempDir dir;
  write_file_atomic(dir / "big.txt", text);
  BpeTrainer whole(false), by_file(false);
  whole.add_text(text);
  int threads = omp_get_max_threads();
  omp_set_num_threads(3);
  by_file.add_file(dir / "big.txt");
  omp_set_num_threads(threads);
  EXPECT_EQ(whole.distinct_words(), by_file.distinct_words());
  BpeTrainOptions options;
  options.vocab_size = 400;
  options.progress = false;
  EXPECT_EQ(bpe_tokenizer_json(whole.train(options)), bpe_tokenizer_json(by_file.train(options)));
}

TEST(BpeTrain, CommandErrors) {
  TempDir dir;
  write_file_atomic(dir / "bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
  auto r = run_whale("tokenizer train --input " + dir / "bad.jsonl" + " --vocab-size 300 --out " +
                     dir / "out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("bad.jsonl:2"), std::string::npos) << r.output;
  write_file_atomic(dir / "ok.txt", "hello");
  r = run_whale("tokenizer train --input " + dir / "ok.txt" + " --vocab-size 100 --out " +
                dir / "out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("at least 258"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "out/tokenizer.json"));
}

}  // namespace
}  // namespace whale::text
