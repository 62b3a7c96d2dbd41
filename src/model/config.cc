#include "model/config.h"

#include <cmath>
#include <filesystem>

#include "base/error.h"
#include "base/file.h"

namespace whale {

using json = nlohmann::json;

namespace {

// Reads j[key] as T, or `fallback` when the key is absent or null. A value of the wrong type is
// an Error that names the field.
template <typename T>
T field(const json& j, const char* key, T fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    if constexpr (std::is_same_v<T, int>) {
      if (it->is_number_float()) {
        double v = it->get<double>();
        check(v == std::floor(v), "");
        return static_cast<int>(v);
      }
      check(it->is_number_integer(), "");
    } else if constexpr (std::is_same_v<T, double>) {
      check(it->is_number(), "");
    } else if constexpr (std::is_same_v<T, bool>) {
      check(it->is_boolean(), "");
    } else {
      check(it->is_string(), "");
    }
    return it->get<T>();
  } catch (const std::exception&) {
    throw Error(source + ": field '" + key + "' has the wrong type (" + it->dump() + ")");
  }
}

double yarn_get_mscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  check(j.is_object(), source + ": not a JSON object");
  ModelConfig c;
  c.model_type = field<std::string>(j, "model_type", "", source);
  const std::string& t = c.model_type;
  check(t == "deepseek_v2" || t == "deepseek_v3" || t == "deepseek_v32" || t == "qwen2" ||
            t == "llama",
        source + ": unsupported model_type '" + t +
            "' (whale runs deepseek_v2, deepseek_v3, deepseek_v32, qwen2, llama)");
  bool v2 = t == "deepseek_v2", v3 = t == "deepseek_v3" || t == "deepseek_v32";
  bool qwen = t == "qwen2";

  // Hugging Face defaults of each configuration class.
  c.vocab_size = field(j, "vocab_size", v2 ? 102400 : v3 ? 129280 : qwen ? 151936 : 32000, source);
  c.hidden_size = field(j, "hidden_size", v3 ? 7168 : 4096, source);
  c.intermediate_size = field(j, "intermediate_size", v3 ? 18432 : qwen ? 22016 : 11008, source);
  c.num_hidden_layers = field(j, "num_hidden_layers", v2 ? 30 : v3 ? 61 : 32, source);
  c.num_attention_heads = field(j, "num_attention_heads", v3 ? 128 : 32, source);
  c.num_key_value_heads = field(j, "num_key_value_heads", c.num_attention_heads, source);
  c.rms_norm_eps = field(j, "rms_norm_eps", 1e-6, source);
  c.rope_theta = field(j, "rope_theta", 10000.0, source);
  c.max_position_embeddings = field(j, "max_position_embeddings",
                                    v2     ? 2048
                                    : v3   ? 4096
                                    : qwen ? 32768
                                           : 2048,
                                    source);
  c.tie_word_embeddings = field(j, "tie_word_embeddings", false, source);
  c.bos_token_id = field(j, "bos_token_id", v2 ? 100000 : v3 ? 0 : qwen ? 151643 : 1, source);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    for (auto& e : j["eos_token_id"]) {
      check(e.is_number_integer(), source + ": field 'eos_token_id' has a non-integer entry");
      c.eos_token_ids.push_back(e.get<int>());
    }
  } else {
    c.eos_token_ids = {field(j, "eos_token_id", v2 ? 100001 : v3 ? 1 : qwen ? 151643 : 2, source)};
  }
  c.torch_dtype = field<std::string>(j, "torch_dtype", "bfloat16", source);

  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const json& r = j["rope_scaling"];
    check(r.is_object(), source + ": field 'rope_scaling' is not an object");
    std::string where = source + " rope_scaling";
    RopeScaling& s = c.rope_scaling;
    s.type = field<std::string>(r, "type", field<std::string>(r, "rope_type", "", where), where);
    if (s.type == "default") s.type = "";
    check(s.type == "" || s.type == "yarn" || s.type == "llama3" || s.type == "linear",
          source + ": unsupported rope_scaling type '" + s.type + "'");
    s.factor = field(r, "factor", 1.0, where);
    s.original_max_position_embeddings =
        field(r, "original_max_position_embeddings", s.type == "llama3" ? 8192.0 : 4096.0, where);
    s.beta_fast = field(r, "beta_fast", 32.0, where);
    s.beta_slow = field(r, "beta_slow", 1.0, where);
    s.mscale = field(r, "mscale", 1.0, where);
    s.mscale_all_dim = field(r, "mscale_all_dim", 0.0, where);
    s.low_freq_factor = field(r, "low_freq_factor", 1.0, where);
    s.high_freq_factor = field(r, "high_freq_factor", 4.0, where);
  }

  if (c.is_deepseek()) {
    c.q_lora_rank = field(j, "q_lora_rank", 1536, source);  // null → 0 below
    if (j.contains("q_lora_rank") && j["q_lora_rank"].is_null()) c.q_lora_rank = 0;
    c.kv_lora_rank = field(j, "kv_lora_rank", 512, source);
    c.qk_nope_head_dim = field(j, "qk_nope_head_dim", 128, source);
    c.qk_rope_head_dim = field(j, "qk_rope_head_dim", 64, source);
    c.v_head_dim = field(j, "v_head_dim", 128, source);
    c.n_routed_experts = field(j, "n_routed_experts", v3 ? 256 : 0, source);
    c.n_shared_experts = field(j, "n_shared_experts", v3 ? 1 : 0, source);
    c.num_experts_per_tok = field(j, "num_experts_per_tok", v3 ? 8 : 0, source);
    c.moe_intermediate_size = field(j, "moe_intermediate_size", v3 ? 2048 : 1407, source);
    c.first_k_dense_replace = field(j, "first_k_dense_replace", v3 ? 3 : 0, source);
    c.moe_layer_freq = field(j, "moe_layer_freq", 1, source);
    c.n_group = field(j, "n_group", v3 ? 8 : 1, source);
    c.topk_group = field(j, "topk_group", v3 ? 4 : 1, source);
    c.topk_method = field<std::string>(j, "topk_method", v3 ? "noaux_tc" : "greedy", source);
    c.scoring_func = field<std::string>(j, "scoring_func", v3 ? "sigmoid" : "softmax", source);
    c.norm_topk_prob = field(j, "norm_topk_prob", v3, source);
    c.routed_scaling_factor = field(j, "routed_scaling_factor", v3 ? 2.5 : 1.0, source);
    c.num_nextn_predict_layers = field(j, "num_nextn_predict_layers", 0, source);
    if (c.has_indexer()) {
      c.index_n_heads = field(j, "index_n_heads", 64, source);
      c.index_head_dim = field(j, "index_head_dim", 128, source);
      c.index_topk = field(j, "index_topk", 2048, source);
    }
  } else {
    c.head_dim = field(j, "head_dim", 0, source);
    c.attention_bias = qwen ? true : field(j, "attention_bias", false, source);
    c.mlp_bias = field(j, "mlp_bias", false, source);
  }

  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    const json& q = j["quantization_config"];
    std::string where = source + " quantization_config";
    check(q.is_object(), where + " is not an object");
    std::string method = field<std::string>(q, "quant_method", "", where);
    check(method == "fp8", source + ": unsupported quantization_config.quant_method '" + method +
                               "' (whale reads fp8 block-scaled checkpoints)");
    std::string fmt = field<std::string>(q, "fmt", "e4m3", where);
    check(fmt == "e4m3", source + ": unsupported fp8 format '" + fmt + "'");
    c.fp8 = true;
    if (q.contains("weight_block_size")) {
      const json& b = q["weight_block_size"];
      check(b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer(),
            where + ".weight_block_size must be [rows, cols]");
      c.fp8_block_rows = b[0].get<int>();
      c.fp8_block_cols = b[1].get<int>();
    }
    c.scale_fmt = field<std::string>(q, "scale_fmt", "", where);
  }
  if (c.scale_fmt.empty()) c.scale_fmt = field<std::string>(j, "scale_fmt", "", source);
  c.validate(source);
  return c;
}

ModelConfig ModelConfig::load(const std::string& model_dir) {
  check(std::filesystem::is_directory(model_dir), model_dir + ": not a directory");
  std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  check(std::filesystem::exists(path), model_dir + ": no config.json (is this a model folder?)");
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
  return from_json(j, path);
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int v, const char* name) {
    check(v > 0, source + ": '" + name + "' must be positive (is " + std::to_string(v) + ")");
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  check(rms_norm_eps > 0, source + ": 'rms_norm_eps' must be positive");
  check(rope_theta > 0, source + ": 'rope_theta' must be positive");
  check(rope_scaling.type.empty() || rope_scaling.factor > 0,
        source + ": rope_scaling.factor must be positive");
  if (is_deepseek()) {
    check(q_lora_rank >= 0, source + ": 'q_lora_rank' must be null or positive");
    positive(kv_lora_rank, "kv_lora_rank");
    positive(qk_nope_head_dim, "qk_nope_head_dim");
    positive(qk_rope_head_dim, "qk_rope_head_dim");
    positive(v_head_dim, "v_head_dim");
    check(qk_rope_head_dim % 2 == 0, source + ": 'qk_rope_head_dim' must be even");
    check(first_k_dense_replace >= 0, source + ": 'first_k_dense_replace' must be >= 0");
    positive(moe_layer_freq, "moe_layer_freq");
    bool any_dense = n_routed_experts == 0 || first_k_dense_replace > 0 || moe_layer_freq > 1;
    if (any_dense) positive(intermediate_size, "intermediate_size");
    check(n_routed_experts >= 0, source + ": 'n_routed_experts' must be >= 0");
    if (n_routed_experts > 0) {
      positive(num_experts_per_tok, "num_experts_per_tok");
      positive(moe_intermediate_size, "moe_intermediate_size");
      check(n_shared_experts >= 0, source + ": 'n_shared_experts' must be >= 0");
      check(num_experts_per_tok <= n_routed_experts,
            source + ": num_experts_per_tok (" + std::to_string(num_experts_per_tok) +
                ") exceeds n_routed_experts (" + std::to_string(n_routed_experts) + ")");
      check(topk_method == "greedy" || topk_method == "group_limited_greedy" ||
                topk_method == "noaux_tc",
            source + ": unsupported topk_method '" + topk_method + "'");
      check(scoring_func == "softmax" || scoring_func == "sigmoid",
            source + ": unsupported scoring_func '" + scoring_func + "'");
      positive(n_group, "n_group");
      check(n_routed_experts % n_group == 0,
            source + ": n_routed_experts (" + std::to_string(n_routed_experts) +
                ") is not a multiple of n_group (" + std::to_string(n_group) + ")");
      check(topk_group >= 1 && topk_group <= n_group,
            source + ": topk_group must be in [1, n_group]");
      if (topk_method != "greedy")
        check(topk_group * (n_routed_experts / n_group) >= num_experts_per_tok,
              source + ": topk_group groups hold fewer experts than num_experts_per_tok");
      if (topk_method == "noaux_tc")
        check(n_routed_experts / n_group >= 2 || n_group == 1,
              source + ": noaux_tc scores groups by their top-2 experts: groups need >= 2");
    }
    check(num_nextn_predict_layers == 0 || num_nextn_predict_layers == 1,
          source + ": num_nextn_predict_layers must be 0 or 1 (D = 1 as in DeepSeek-V3)");
    if (has_indexer()) {
      check(q_lora_rank > 0, source + ": deepseek_v32 needs q_lora_rank (the indexer reads c_Q)");
      positive(index_n_heads, "index_n_heads");
      positive(index_head_dim, "index_head_dim");
      positive(index_topk, "index_topk");
      check((index_head_dim & (index_head_dim - 1)) == 0,
            source + ": index_head_dim must be a power of two (Hadamard transform)");
      check(index_head_dim > qk_rope_head_dim,
            source + ": index_head_dim must exceed qk_rope_head_dim");
      check(index_head_dim <= 128 || index_head_dim % 128 == 0,
            source + ": index_head_dim above 128 must be a multiple of 128 (FP8 blocks)");
    }
    if (fp8) {
      positive(fp8_block_rows, "weight_block_size[0]");
      positive(fp8_block_cols, "weight_block_size[1]");
    }
    check(scale_fmt.empty() || scale_fmt == "ue8m0",
          source + ": unsupported scale_fmt '" + scale_fmt + "'");
  } else {
    positive(intermediate_size, "intermediate_size");
    positive(num_key_value_heads, "num_key_value_heads");
    check(num_attention_heads % num_key_value_heads == 0,
          source + ": num_attention_heads is not a multiple of num_key_value_heads");
    check(head_dim > 0 || hidden_size % num_attention_heads == 0,
          source + ": hidden_size is not a multiple of num_attention_heads");
    check(dense_head_dim() % 2 == 0, source + ": head_dim must be even");
    check(!fp8, source + ": fp8 quantization is supported for DeepSeek models only");
  }
}

double ModelConfig::softmax_scale() const {
  if (!is_deepseek()) return 1.0 / std::sqrt(static_cast<double>(dense_head_dim()));
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling.type == "yarn" && rope_scaling.mscale_all_dim != 0) {
    double m = yarn_get_mscale(rope_scaling.factor, rope_scaling.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

json ModelConfig::to_json() const {
  json j;
  static const std::map<std::string, std::string> kArchitectures = {
      {"deepseek_v2", "DeepseekV2ForCausalLM"},
      {"deepseek_v3", "DeepseekV3ForCausalLM"},
      {"deepseek_v32", "DeepseekV32ForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"},
      {"llama", "LlamaForCausalLM"}};
  j["architectures"] = {kArchitectures.at(model_type)};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1)
    j["eos_token_id"] = eos_token_ids[0];
  else
    j["eos_token_id"] = eos_token_ids;
  j["torch_dtype"] = torch_dtype;
  j["hidden_act"] = "silu";
  if (rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else if (rope_scaling.type == "yarn") {
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", rope_scaling.factor},
                         {"original_max_position_embeddings",
                          static_cast<int>(rope_scaling.original_max_position_embeddings)},
                         {"beta_fast", rope_scaling.beta_fast},
                         {"beta_slow", rope_scaling.beta_slow},
                         {"mscale", rope_scaling.mscale},
                         {"mscale_all_dim", rope_scaling.mscale_all_dim}};
  } else if (rope_scaling.type == "llama3") {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", rope_scaling.factor},
                         {"low_freq_factor", rope_scaling.low_freq_factor},
                         {"high_freq_factor", rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings",
                          static_cast<int>(rope_scaling.original_max_position_embeddings)}};
  } else {
    j["rope_scaling"] = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
  }
  if (is_deepseek()) {
    j["q_lora_rank"] = q_lora_rank > 0 ? json(q_lora_rank) : json(nullptr);
    j["kv_lora_rank"] = kv_lora_rank;
    j["qk_nope_head_dim"] = qk_nope_head_dim;
    j["qk_rope_head_dim"] = qk_rope_head_dim;
    j["v_head_dim"] = v_head_dim;
    j["n_routed_experts"] = n_routed_experts > 0 ? json(n_routed_experts) : json(nullptr);
    j["n_shared_experts"] = n_shared_experts;
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["moe_intermediate_size"] = moe_intermediate_size;
    j["first_k_dense_replace"] = first_k_dense_replace;
    j["moe_layer_freq"] = moe_layer_freq;
    j["n_group"] = n_group;
    j["topk_group"] = topk_group;
    j["topk_method"] = topk_method;
    j["scoring_func"] = scoring_func;
    j["norm_topk_prob"] = norm_topk_prob;
    j["routed_scaling_factor"] = routed_scaling_factor;
    j["num_nextn_predict_layers"] = num_nextn_predict_layers;
    j["attention_bias"] = false;
    if (has_indexer()) {
      j["index_n_heads"] = index_n_heads;
      j["index_head_dim"] = index_head_dim;
      j["index_topk"] = index_topk;
    }
    if (fp8) {
      j["quantization_config"] = {{"activation_scheme", "dynamic"},
                                  {"fmt", "e4m3"},
                                  {"quant_method", "fp8"},
                                  {"weight_block_size", {fp8_block_rows, fp8_block_cols}}};
      if (!scale_fmt.empty()) j["quantization_config"]["scale_fmt"] = scale_fmt;
    }
  } else {
    if (head_dim > 0) j["head_dim"] = head_dim;
    j["attention_bias"] = attention_bias;
    if (model_type == "llama") j["mlp_bias"] = mlp_bias;
  }
  return j;
}

}  // namespace whale
