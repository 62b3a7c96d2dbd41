// attention_block (model/attention.h): one head's attention over a block of prompt rows by sgemm.
#include <algorithm>
#include <limits>

#include "model/attention.h"
#include "ops/gemm.h"
#include "ops/nn.h"

namespace whale {

int attention_block_rows(int L) {
  return std::clamp((1 << 18) / std::max(L, 1), 8, 64);
}

void attention_block(const std::vector<ScoreTerm>& terms, float scale, const float* v, int ldv,
                     int dv, int pos0, int t0, int n, const AttentionMask& mask, float* scores,
                     float* out, int ldo) {
  const int positions = pos0 + t0 + n;  // what the block's last row sees
  for (size_t i = 0; i < terms.size(); ++i) {
    const ScoreTerm& term = terms[i];
    gemm(false, true, n, positions, term.dim, scale, term.q, term.ldq, term.k, term.ldk,
         i == 0 ? 0.0f : 1.0f, scores, positions);
  }
  for (int j = 0; j < n; ++j) {
    float* row = scores + static_cast<size_t>(j) * positions;
    const int t = t0 + j, visible = pos0 + t + 1;
    if (!mask.empty())
      for (int s = 0; s < visible; ++s)
        if (!mask[t][s]) row[s] = -std::numeric_limits<float>::infinity();
    softmax(row, visible);
    std::fill(row + visible, row + positions, 0.0f);
  }
  gemm(false, false, n, dv, positions, 1.0f, scores, positions, v, ldv, 0.0f, out, ldo);
}

}  // namespace whale
