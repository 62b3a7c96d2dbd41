// `whale demo r1-zero`, whale's main job: DeepSeek-R1-Zero in miniature, end to end on a CPU.
//  1. pre-train a small V3-architecture model (MLA + MoE + MTP) on a synthetic corpus: first
//     worked solutions (every task document shows its steps), then Q/A documents that are all
//     right, where most answer at once and a few reason step by step inside <think>…</think>;
//  2. measure held-out accuracy (problems never seen in any corpus or RL prompt);
//  3. GRPO straight from the pre-trained model (no SFT), rewarded only for correct, well-formed
//     answers;
//  4. an SFT-only baseline with the same wall-clock: more training on the task documents;
//  5. summary.json, curves (PNG), report.html with reasoning traces, the final model (model/).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "train/trainer.h"

namespace whale {

struct R1ZeroConfig {
  std::string out_dir = "runs/r1-zero";
  double budget = 1.0;  // scales every stage (1.0: 900 pre-training steps, 60 GRPO steps, ≈ 10
                        // minutes on 2 cores)
  uint64_t seed = 0;
};

void run_r1_zero(const R1ZeroConfig& config);

// The demo's tasks: the last digit of a chain of one-digit products and sums ("chain"). Multi-
// digit column arithmetic, word problems and Countdown need more pre-training than the default
// ten minutes give this model to learn their steps (tried: ~2% with or without reasoning
// after 900 steps); `whale grpo --tasks` runs them at any budget.
const std::vector<std::string>& r1_zero_tasks();

// The demo's pre-training text. Every task document is right (a clean corpus); only
// `reason_share` of them show their work inside <think>…</think>, the rest answer at once
// (<think></think>); drills list the one-digit facts. A small model cannot compose three
// lookups in one step, but can follow the steps: the pre-trained model greedily answers at
// once, and RL has to find that reasoning pays — R1-Zero's story.
struct CorpusMix {
  double reason_share = 0.3;
  double story_share = 0.03;            // small stories before the task documents
  double drill_share = 0.2;             // one-digit sums and products, a line each
  double worked_share = 0.0;            // worked examples outside the Q/A template
  std::vector<std::string> tasks = {};  // empty: r1_zero_tasks()
};
std::string r1_zero_corpus(const CorpusMix& mix, size_t bytes, uint64_t seed);

// The same documents as (prompt, response) pairs for fine-tuning.
struct SftExample;
namespace text {
class Tokenizer;
}
std::vector<SftExample> corpus_examples(const text::Tokenizer& tokenizer, const CorpusMix& mix,
                                        int count, uint64_t seed);

// Building blocks shared by the demos.
constexpr int kDemoHeldoutPerTask = 200, kDemoMaxTokens = 72;
// The demo's pre-training data, two parts of one byte-level tokenizer: `worked`, where every task
// document shows its steps (as textbooks do), then `qa`, the CorpusMix{} documents, where most
// answer at once. (Mixed into one corpus, the 30% of documents with steps are too few for the
// model to learn to follow them in the demo's budget: 25% vs 94% of sampled step-by-step answers
// right after 1800 steps; and the skill appears late: 1400 worked steps gave ~55%, 1800 ~95%.)
// The base model can reason, and answers at once: R1-Zero's start.
struct DemoData {
  std::string worked, qa, tokenizer;
};
DemoData write_demo_corpus(const std::string& dir, double bytes, uint64_t seed);
struct TrainerConfig;
struct GrpoTrainConfig;
// Stages are sized in steps, not seconds, so a run gives the same result on any machine:
// `steps` scaled by the budget (at least 2).
long demo_steps(long steps, double budget);
// Pre-training of a demo model (a preset).
TrainerConfig demo_pretrain_config(const std::string& data, const std::string& out,
                                   const std::string& preset, long steps, uint64_t seed);
// Pre-training in the two parts (5/6 of the steps on `worked`, the rest on `qa`); the result is
// pre.model_dir.
struct DemoPretrain {
  std::string model_dir, qa_out_dir;
  TrainSummary worked, qa;
};
DemoPretrain demo_pretrain(const DemoData& data, const std::string& out, const std::string& preset,
                           long steps, uint64_t seed, float mtp_weight);
// GRPO on the demo's tasks.
GrpoTrainConfig demo_grpo_config(const std::string& model_dir, const std::string& out, int steps,
                                 uint64_t seed);

}  // namespace whale
