// Tiny models with a known answer, for the chat and serve tests: a random tiny V3 over the
// byte-level vocabulary whose weights are rewritten into a bigram chain (every block writes
// zeros, so the logits depend only on the last token: after token `from` comes token `to`).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"

namespace whale::testing {

// Rewrites DIR's f32 weights into the bigram chain.
inline void script_bigram_model(const std::string& dir,
                                const std::vector<std::pair<char, int>>& chain) {
  std::vector<TensorData> tensors;
  {
    SafetensorsFile file(dir + "/model.safetensors");
    for (const auto& [name, view] : file.tensors()) {
      ASSERT_EQ(view.dtype, DType::F32) << name;
      TensorData t{{name, view.dtype, view.shape}, {view.data, view.data + view.nbytes}};
      float* w = reinterpret_cast<float*>(t.bytes.data());
      const int64_t n = view.numel();
      auto ends_with = [&](const char* suffix) { return name.ends_with(suffix); };
      if (ends_with("o_proj.weight") || ends_with("down_proj.weight")) std::fill(w, w + n, 0.0f);
      if (name == "model.norm.weight") std::fill(w, w + n, 1.0f);
      const int64_t hidden = view.shape.size() == 2 ? view.shape[1] : 0;
      if (name == "model.embed_tokens.weight" || name == "lm_head.weight") {
        bool embed = name == "model.embed_tokens.weight";
        if (!embed) std::fill(w, w + n, 0.0f);
        for (size_t slot = 0; slot < chain.size(); ++slot) {
          int from = static_cast<unsigned char>(chain[slot].first), to = chain[slot].second;
          if (embed) {
            std::fill(w + from * hidden, w + (from + 1) * hidden, 0.0f);
            w[from * hidden + slot] = 1.0f;
          } else {
            w[to * hidden + slot] = 4.0f;  // normed one-hot is 8·e_slot: logit 32
          }
        }
      }
      tensors.push_back(std::move(t));
    }
  }
  write_safetensors(dir + "/model.safetensors", tensors);
}

// After the last prompt token '\n' (R1's generation prompt ends "<think>\n") the model says
// "ab</think>XY", after ':' ("Assistant:") it says "OK", each then followed by EOS (257).
inline const std::vector<std::pair<char, int>> kThinkScript = {
    {'\n', 'a'}, {'a', 'b'}, {'b', '<'}, {'<', '/'}, {'/', 't'}, {'t', 'h'},
    {'h', 'i'},  {'i', 'n'}, {'n', 'k'}, {'k', '>'}, {'>', 'X'}, {'X', 'Y'},
    {'Y', 257},  {':', 'O'}, {'O', 'K'}, {'K', 257}};

}  // namespace whale::testing
