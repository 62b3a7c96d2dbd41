// Built-in model shapes for `whale init --preset`: tiny ones for tests, larger ones for benchmarks.
#include <map>

#include "base/error.h"
#include "model/config.h"

namespace whale {

namespace {

ModelConfig tiny_deepseek(const std::string& type) {
  ModelConfig c;
  c.model_type = type;
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 4096;
  c.bos_token_id = 0;
  c.eos_token_ids = {1};
  c.q_lora_rank = 32;
  c.kv_lora_rank = 32;
  c.qk_nope_head_dim = 16;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 16;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 32;
  c.first_k_dense_replace = 1;
  if (type == "deepseek_v2") {
    c.topk_method = "greedy";
    c.scoring_func = "softmax";
    c.norm_topk_prob = false;
    c.routed_scaling_factor = 1.0;
    c.q_lora_rank = 0;
  } else {
    c.topk_method = "noaux_tc";
    c.scoring_func = "sigmoid";
    c.norm_topk_prob = true;
    c.routed_scaling_factor = 2.5;
    c.n_group = 4;
    c.topk_group = 2;
    c.num_nextn_predict_layers = 1;
  }
  if (type == "deepseek_v32") {
    c.index_n_heads = 4;
    c.index_head_dim = 32;
    c.index_topk = 16;
  }
  return c;
}

ModelConfig tiny_dense(const std::string& type) {
  ModelConfig c;
  c.model_type = type;
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.bos_token_id = 0;
  c.eos_token_ids = {1};
  c.max_position_embeddings = 4096;
  c.attention_bias = type == "qwen2";
  c.tie_word_embeddings = type == "qwen2";
  return c;
}

// DeepSeek-V2-Lite's widths in the V3 architecture, 8 layers: 4.6B parameters, 0.87B active.
// The benchmark model of the fast-inference work.
ModelConfig v2_lite_8l() {
  ModelConfig c;
  c.model_type = "deepseek_v3";
  c.vocab_size = 102400;
  c.hidden_size = 2048;
  c.intermediate_size = 10944;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 16;
  c.bos_token_id = 100000;
  c.eos_token_ids = {100001};
  c.max_position_embeddings = 163840;
  c.q_lora_rank = 0;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.n_routed_experts = 64;
  c.n_shared_experts = 2;
  c.num_experts_per_tok = 6;
  c.moe_intermediate_size = 1408;
  c.first_k_dense_replace = 1;
  c.topk_method = "noaux_tc";
  c.scoring_func = "sigmoid";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.n_group = 8;
  c.topk_group = 4;
  c.num_nextn_predict_layers = 1;
  return c;
}

// A small V3 model for training demos (~25M parameters).
ModelConfig small_v3() {
  ModelConfig c = tiny_deepseek("deepseek_v3");
  c.vocab_size = 4096;
  c.hidden_size = 256;
  c.intermediate_size = 768;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 8;
  c.q_lora_rank = 128;
  c.kv_lora_rank = 64;
  c.qk_nope_head_dim = 32;
  c.qk_rope_head_dim = 16;
  c.v_head_dim = 32;
  c.n_routed_experts = 16;
  c.num_experts_per_tok = 4;
  c.moe_intermediate_size = 128;
  c.n_group = 4;
  c.topk_group = 2;
  return c;
}

// The model of `whale demo r1-zero`: MLA + DeepSeekMoE + MTP, small enough to pre-train and
// then RL-tune on two cores in minutes; byte-level vocabulary.
ModelConfig r1_zero_demo() {
  ModelConfig c = tiny_deepseek("deepseek_v3");
  c.vocab_size = 258;
  c.bos_token_id = 256;
  c.eos_token_ids = {257};
  c.hidden_size = 128;
  c.intermediate_size = 384;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.q_lora_rank = 64;
  c.kv_lora_rank = 32;
  c.qk_nope_head_dim = 32;
  c.qk_rope_head_dim = 16;
  c.v_head_dim = 32;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.n_shared_experts = 1;
  c.moe_intermediate_size = 128;
  c.n_group = 4;
  c.topk_group = 2;
  return c;
}

// The student of `whale demo r1`'s distillation: a dense Qwen2-architecture model (as R1's
// distilled models are) with the byte vocabulary, about a third of the teacher's compute.
ModelConfig r1_student() {
  ModelConfig c = tiny_dense("qwen2");
  c.vocab_size = 258;
  c.bos_token_id = 256;
  c.eos_token_ids = {257};
  c.hidden_size = 96;
  c.intermediate_size = 256;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  return c;
}

const std::map<std::string, ModelConfig (*)()>& presets() {
  static const std::map<std::string, ModelConfig (*)()> table = {
      {"tiny", [] { return tiny_deepseek("deepseek_v3"); }},
      {"tiny-v2", [] { return tiny_deepseek("deepseek_v2"); }},
      {"tiny-v32", [] { return tiny_deepseek("deepseek_v32"); }},
      {"tiny-qwen2", [] { return tiny_dense("qwen2"); }},
      {"tiny-llama", [] { return tiny_dense("llama"); }},
      {"small", small_v3},
      {"v2-lite-8l", v2_lite_8l},
      {"r1-zero-demo", r1_zero_demo},
      {"r1-student", r1_student},
  };
  return table;
}

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (auto& [name, make] : presets()) names.push_back(name);
  return names;
}

ModelConfig preset_config(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string known;
    for (auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown preset '" + name + "' (known: " + known + ")");
  }
  ModelConfig c = it->second();
  c.validate("preset " + name);
  return c;
}

}  // namespace whale
