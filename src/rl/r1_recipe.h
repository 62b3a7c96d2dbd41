// `whale demo r1`: the fuller DeepSeek-R1 recipe in miniature (MISSION §3), end to end on a CPU:
//  1. pre-train the V3-architecture teacher (as the R1-Zero demo does);
//  2. cold start: SFT on a few thousand worked solutions (reasoning inside <think>…</think>);
//  3. reasoning RL: GRPO from the cold-started model;
//  4. rejection sampling: sample the RL model on training problems, keep the correct answers;
//  5. SFT of the pre-trained model on those samples (R1's second SFT round), the final teacher;
//  6. distillation into a smaller dense Qwen2-architecture student (pre-trained on the same
//     corpus): SFT on the teacher's correct samples with logit KD and CCKD, against the same
//     student fine-tuned for the same time on the corpus's own documents, without the teacher.
// summary.json, report.html (accuracy of every stage, per task, curves, traces), teacher/ and
// student/ models.
#pragma once
#include <cstdint>
#include <string>

namespace whale {

struct R1Config {
  std::string out_dir = "runs/r1";
  double budget = 1.0;  // scales every stage's time (1.0 ≈ 14 minutes on 2 cores)
  uint64_t seed = 0;
};

void run_r1(const R1Config& config);

}  // namespace whale
