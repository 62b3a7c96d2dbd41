// What the bench programs on llama.h (speed.cpp, interleaved.cpp) share: one llama_decode of n
// tokens of sequence 0 at positions pos … pos + n − 1, the logits of the last one only (as a
// server computes them). Exits with a message if llama.cpp refuses the batch.
#pragma once
#include <llama.h>

#include <cstdio>
#include <cstdlib>

inline void decode_batch(llama_context* ctx, llama_batch& batch, const llama_token* tokens, int n,
                         int pos) {
  for (int i = 0; i < n; ++i) {
    batch.token[i] = tokens[i];
    batch.pos[i] = pos + i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = i == n - 1;
  }
  batch.n_tokens = n;
  if (llama_decode(ctx, batch) != 0) {
    std::fprintf(stderr, "llama_decode failed\n");
    std::exit(1);
  }
}
