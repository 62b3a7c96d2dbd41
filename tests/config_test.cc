// config.json parsing: defaults, every supported model_type, and clear errors.
#include "model/config.h"

#include <gtest/gtest.h>

#include "base/error.h"
#include "model/kv_cache.h"

namespace whale {
namespace {

using json = nlohmann::json;

std::string error_of(const json& j) {
  try {
    ModelConfig::from_json(j, "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, AbsentFieldsTakeHuggingFaceDefaults) {
  ModelConfig v3 = ModelConfig::from_json({{"model_type", "deepseek_v3"}}, "c");
  EXPECT_EQ(v3.hidden_size, 7168);
  EXPECT_EQ(v3.num_hidden_layers, 61);
  EXPECT_EQ(v3.q_lora_rank, 1536);
  EXPECT_EQ(v3.kv_lora_rank, 512);
  EXPECT_EQ(v3.n_routed_experts, 256);
  EXPECT_EQ(v3.num_experts_per_tok, 8);
  EXPECT_EQ(v3.n_group, 8);
  EXPECT_EQ(v3.topk_group, 4);
  EXPECT_EQ(v3.topk_method, "noaux_tc");
  EXPECT_EQ(v3.scoring_func, "sigmoid");
  EXPECT_TRUE(v3.norm_topk_prob);
  EXPECT_DOUBLE_EQ(v3.routed_scaling_factor, 2.5);
  EXPECT_EQ(v3.first_k_dense_replace, 3);
  EXPECT_FALSE(v3.is_moe_layer(2));
  EXPECT_TRUE(v3.is_moe_layer(3));
  // V3's KV cache: 61 layers × (512 + 64) numbers per token.
  EXPECT_EQ(kv_cache_bytes_per_token(v3), 61u * 576 * sizeof(float));

  ModelConfig v2 = ModelConfig::from_json({{"model_type", "deepseek_v2"},
                                           {"q_lora_rank", nullptr},
                                           {"n_routed_experts", 64},
                                           {"num_experts_per_tok", 6}},
                                          "c");
  EXPECT_EQ(v2.q_lora_rank, 0);
  EXPECT_EQ(v2.scoring_func, "softmax");
  EXPECT_EQ(v2.topk_method, "greedy");
  EXPECT_FALSE(v2.has_mtp());

  ModelConfig v32 = ModelConfig::from_json({{"model_type", "deepseek_v32"}}, "c");
  EXPECT_EQ(v32.index_n_heads, 64);
  EXPECT_EQ(v32.index_head_dim, 128);
  EXPECT_EQ(v32.index_topk, 2048);
  // Plus the indexer's FP8 key: 128 codes and one f32 scale per layer.
  EXPECT_EQ(kv_cache_bytes_per_token(v32), 61u * (576 * sizeof(float) + 128 + 4));

  ModelConfig qwen =
      ModelConfig::from_json({{"model_type", "qwen2"}, {"num_key_value_heads", 4}}, "c");
  EXPECT_TRUE(qwen.attention_bias);
  EXPECT_EQ(kv_cache_bytes_per_token(qwen), 32u * 2 * 4 * 128 * sizeof(float));
}

TEST(Config, YarnScalesTheSoftmax) {
  json j = {{"model_type", "deepseek_v3"},
            {"rope_scaling",
             {{"type", "yarn"},
              {"factor", 40},
              {"mscale", 1.0},
              {"mscale_all_dim", 1.0},
              {"original_max_position_embeddings", 4096}}}};
  ModelConfig c = ModelConfig::from_json(j, "c");
  double m = 0.1 * std::log(40.0) + 1;
  EXPECT_NEAR(c.softmax_scale(), m * m / std::sqrt(192.0), 1e-12);
  j.erase("rope_scaling");
  EXPECT_NEAR(ModelConfig::from_json(j, "c").softmax_scale(), 1 / std::sqrt(192.0), 1e-12);
}

TEST(Config, FP8QuantizationConfig) {
  json j = {{"model_type", "deepseek_v3"},
            {"quantization_config",
             {{"quant_method", "fp8"},
              {"fmt", "e4m3"},
              {"weight_block_size", {128, 128}},
              {"scale_fmt", "ue8m0"}}}};
  ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_TRUE(c.fp8);
  EXPECT_EQ(c.scale_fmt, "ue8m0");
  j["quantization_config"]["quant_method"] = "gptq";
  EXPECT_NE(error_of(j).find("unsupported quantization_config.quant_method 'gptq'"),
            std::string::npos);
}

TEST(Config, BadConfigsGetClearErrors) {
  EXPECT_NE(error_of({{"model_type", "gpt2"}}).find("unsupported model_type 'gpt2'"),
            std::string::npos);
  EXPECT_NE(error_of(json::array()).find("not a JSON object"), std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v3"}, {"hidden_size", "big"}})
                .find("field 'hidden_size' has the wrong type"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v3"}, {"hidden_size", 0}})
                .find("'hidden_size' must be positive"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v3"}, {"n_routed_experts", 10}})
                .find("not a multiple of n_group"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v3"}, {"num_experts_per_tok", 300}})
                .find("exceeds n_routed_experts"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v3"}, {"topk_group", 9}}).find("topk_group"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v3"}, {"topk_method", "magic"}})
                .find("unsupported topk_method 'magic'"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v32"}, {"index_head_dim", 96}}).find("power of two"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v32"}, {"q_lora_rank", nullptr}})
                .find("needs q_lora_rank"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "llama"}, {"num_key_value_heads", 5}})
                .find("not a multiple of num_key_value_heads"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v3"}, {"rope_scaling", {{"type", "ntk"}}}})
                .find("unsupported rope_scaling type 'ntk'"),
            std::string::npos);
  EXPECT_NE(error_of({{"model_type", "deepseek_v3"}, {"qk_rope_head_dim", 63}}).find("even"),
            std::string::npos);
}

TEST(Config, JsonRoundTripAndPresets) {
  for (const std::string& name : preset_names()) {
    ModelConfig c = preset_config(name);
    ModelConfig back = ModelConfig::from_json(c.to_json(), name);
    EXPECT_EQ(back.to_json(), c.to_json()) << name;
  }
  EXPECT_THROW(preset_config("nonexistent"), Error);
}

}  // namespace
}  // namespace whale
