// The model's hyper-parameters: one struct for every architecture whale runs, read from a
// Hugging Face config.json (model_type deepseek_v2, deepseek_v3, deepseek_v32, qwen2, llama)
// with the Hugging Face default for every absent field.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace whale {

struct RopeScaling {
  std::string type;  // "" (none), "yarn" (DeepSeek), "llama3", "linear"
  double factor = 1.0;
  double original_max_position_embeddings = 4096;
  double beta_fast = 32, beta_slow = 1;              // yarn
  double mscale = 1, mscale_all_dim = 0;             // yarn
  double low_freq_factor = 1, high_freq_factor = 4;  // llama3
};

struct ModelConfig {
  std::string model_type;
  int vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0;
  int num_attention_heads = 0, num_key_value_heads = 0;
  double rms_norm_eps = 1e-6, rope_theta = 10000;
  int max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  int bos_token_id = 0;
  std::vector<int> eos_token_ids;
  RopeScaling rope_scaling;

  // Multi-head latent attention (DeepSeek). q_lora_rank 0 means no query compression.
  int q_lora_rank = 0, kv_lora_rank = 0, qk_nope_head_dim = 0, qk_rope_head_dim = 0;
  int v_head_dim = 0;

  // DeepSeekMoE. n_routed_experts 0 means every layer is dense.
  int n_routed_experts = 0, n_shared_experts = 0, num_experts_per_tok = 0;
  int moe_intermediate_size = 0, first_k_dense_replace = 0, moe_layer_freq = 1;
  int n_group = 1, topk_group = 1;
  std::string topk_method = "greedy";    // greedy | group_limited_greedy | noaux_tc
  std::string scoring_func = "softmax";  // softmax | sigmoid
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int num_nextn_predict_layers = 0;  // MTP modules (V3)

  // Lightning indexer of DeepSeek sparse attention (V3.2).
  int index_n_heads = 0, index_head_dim = 0, index_topk = 0;

  // Dense students (Qwen2, Llama).
  int head_dim = 0;
  bool attention_bias = false, mlp_bias = false;

  // FP8 block-quantized weights (quantization_config.quant_method == "fp8").
  bool fp8 = false;
  int fp8_block_rows = 128, fp8_block_cols = 128;
  std::string scale_fmt;  // "" or "ue8m0": how activation scales are rounded (V3.2 indexer)

  std::string torch_dtype = "bfloat16";

  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig load(const std::string& model_dir);  // DIR/config.json
  nlohmann::json to_json() const;
  void validate(const std::string& source) const;

  bool is_deepseek() const { return model_type.rfind("deepseek", 0) == 0; }
  bool has_indexer() const { return model_type == "deepseek_v32"; }
  bool has_mtp() const { return is_deepseek() && num_nextn_predict_layers > 0; }
  bool is_moe_layer(int layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int dense_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  // 1/sqrt(d) times YaRN's mscale² (DeepSeek) — the attention logit scale.
  double softmax_scale() const;
};

// Built-in configurations for `whale init --preset NAME`.
std::vector<std::string> preset_names();
ModelConfig preset_config(const std::string& name);

}  // namespace whale
