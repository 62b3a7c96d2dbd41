// `whale convert --to gguf`: a DeepSeek model folder as a llama.cpp GGUF file of architecture
// `deepseek2` (the one llama.cpp runs DeepSeek-V2/V3 under), so whale-trained models run in
// the llama.cpp ecosystem and benchmarks can run llama.cpp on exactly the weights whale runs.
// Layout, as llama.cpp's converter (convert_hf_to_gguf.py, DeepseekV2Model) writes it:
// - names: token_embd, output_norm, output, blk.N.{attn_norm, attn_q | attn_q_a, attn_q_a_norm,
//   attn_q_b, attn_kv_a_mqa, attn_kv_a_norm, attn_k_b, attn_v_b, attn_output, ffn_norm,
//   ffn_{gate,up,down} (dense layers), ffn_gate_inp, exp_probs_b.bias, ffn_{gate,up,down}_exps,
//   ffn_{gate,up,down}_shexp};
// - kv_b_proj is split per head for absorbed MLA: attn_k_b [heads, kv_lora, nope] (k part
//   transposed) and attn_v_b [heads, v, kv_lora];
// - routed experts stacked into one 3-D tensor per projection;
// - MTP (DeepSeek-V3's D = 1 module) as block N = num_hidden_layers with blk.N.nextn.{eh_proj,
//   enorm, hnorm, embed_tokens, shared_head_head, shared_head_norm}, block_count counting it and
//   nextn_predict_layers = 1;
// - the MLA model as MQA with one KV head of key length kv_lora + rope, value length kv_lora.
#pragma once
#include <string>

#include "io/gguf.h"

namespace whale {

enum class GgufQuant { kF32, kBF16, kQ8_0, kQ4_1 };

struct GgufExportOptions {
  // f32: every tensor f32. bf16: matrices bf16, vectors f32. q8_0: the matrices whale's q8
  // quantizes (attention, FFN, experts, head) as q8_0; embeddings and router gates kept (bf16
  // when stored as bf16, else f32); vectors f32. q4_1: those matrices as q4_1 as whale's q4
  // does, except any matrix stored as q8 and a head not stored as q4, which stay 8-bit (q8_0) — a
  // whale q4 model exports exactly. A quantized matrix whose rows are not a multiple of 32 long
  // stays f32.
  GgufQuant quant = GgufQuant::kBF16;
  bool mtp = true;  // export the MTP module as nextn when the model has one
  bool progress = false;
};

// Reads the model folder (any dtype whale loads) and writes the GGUF file atomically.
// Tokenizer: the folder's tokenizer.json (byte-level BPE) as tokenizer.ggml.model "gpt2",
// else "none" (token ids only).
void export_gguf(const std::string& model_dir, const std::string& out_path,
                 const GgufExportOptions& options);

}  // namespace whale
