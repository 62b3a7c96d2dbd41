// `whale demo r1-zero`, whale's main job: DeepSeek-R1-Zero in miniature, end to end on a CPU.
//  1. pre-train a small V3-architecture model (MLA + MoE + MTP) on a synthetic corpus of
//     stories and task documents; most documents answer tersely (and are often wrong), a few
//     reason step by step inside <think>…</think> (and are right);
//  2. measure held-out accuracy (problems never seen in any corpus or RL prompt);
//  3. GRPO straight from the pre-trained model (no SFT), rewarded only for correct, well-formed
//     answers;
//  4. an SFT-only baseline with the same wall-clock: more training on the task documents;
//  5. summary.json, curves (PNG), report.html with reasoning traces, the final model (model/).
#pragma once
#include <cstdint>
#include <string>

namespace whale {

struct R1ZeroConfig {
  std::string out_dir = "runs/r1-zero";
  double budget = 1.0;  // scales every stage's time (1.0 ≈ 10 minutes on 2 cores)
  uint64_t seed = 0;
};

void run_r1_zero(const R1ZeroConfig& config);

struct Problem;
// One corpus document for a problem: the step-by-step solution (reason), or a bare answer,
// right or (with `noise` choosing how) wrong.
std::string task_document(const Problem& p, bool reason, bool correct, uint64_t noise);

// The demo's pre-training text: task documents (40% reason step by step and are right; the
// rest answer tersely and are right only 30% of the time), after `story_share` of stories.
std::string r1_zero_corpus(size_t bytes, uint64_t seed, double story_share);

}  // namespace whale
