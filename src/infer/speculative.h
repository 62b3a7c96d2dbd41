// Speculative decoding with DeepSeek-V3's MTP module as the draft model (MISSION §1, MTP).
// Each step the MTP head drafts the token after next from the main model's last hidden state;
// one batched forward of the main model over [current token, draft] verifies it. The draft is
// accepted by the standard rule (Leviathan et al. 2023; Chen et al. 2023): with probability
// min(1, p(d)/q(d)), otherwise the token is drawn from normalize(max(0, p − q)); when accepted,
// the second row's logits give a bonus token. Every emitted token is distributed exactly as in
// plain sampling, and greedy output is identical token for token (the verification rows are
// computed with the same arithmetic as single-token decode: absorbed attention, row dots).
// With GenerateOptions::draft_tokens = k > 1 the MTP module is chained: draft j + 1 comes from
// an MTP row fed with draft j's head input in place of the main model's state (what vLLM and
// SGLang do with V3's single MTP layer); the k drafts are verified in one pass of k + 1 rows and
// accepted in order up to the first rejection.
#pragma once
#include <functional>
#include <vector>

#include "infer/generator.h"

namespace whale {

// The acceptance rule on explicit distributions p (target) and q (draft) over one vocabulary.
// Probability of keeping draft d: min(1, p[d] / q[d]) (1 where q[d] = 0, which a draw from q
// never produces).
double acceptance_probability(const std::vector<double>& p, const std::vector<double>& q, int d);
// The distribution a rejected draft is replaced from: normalize(max(0, p − q)). When p = q
// (rejection then has probability 0) it returns p.
std::vector<double> residual_distribution(const std::vector<double>& p,
                                          const std::vector<double>& q);

// Like generate(), drafting options.draft_tokens tokens per step with the MTP module (the model
// must have one). stats, when given, also counts drafts and accepted drafts (by depth).
std::vector<int> generate_speculative(const Model& model, const std::vector<int>& prompt,
                                      const GenerateOptions& options,
                                      const std::function<bool(int)>& on_token = nullptr,
                                      GenerateStats* stats = nullptr);

}  // namespace whale
