#include <chrono>

#include "base/progress.h"
#include "cli/commands.h"
#include "model/kv_cache.h"
#include "model/transformer.h"
#include "ops/kernels.h"
#include "ops/precision.h"

namespace whale {

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Describe a model: architecture, parameters, KV cache");
  static std::string model_dir;
  static bool as_json = false;
  cmd->add_option("--model", model_dir, "Model folder (config.json + safetensors)")->required();
  cmd->add_flag("--json", as_json, "Print one JSON object");
  cmd->callback([] {
    auto t0 = std::chrono::steady_clock::now();
    auto model = Model::load(model_dir);
    double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const ModelConfig& c = model->config();
    Model::ParamCounts p = model->parameter_counts();
    size_t kv = kv_cache_bytes_per_token(c);
    nlohmann::json j = {{"model_type", c.model_type},
                        {"layers", c.num_hidden_layers},
                        {"hidden_size", c.hidden_size},
                        {"vocab_size", c.vocab_size},
                        {"params_total", p.total},
                        {"params_active", p.active},
                        {"params_mtp", p.mtp},
                        {"kv_cache_bytes_per_token", kv},
                        {"weight_bytes", model->checkpoint().total_bytes()},
                        {"load_seconds", load_s},
                        {"simd", simd_description()}};
    if (as_json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("model type       %s\n", c.model_type.c_str());
    std::printf("layers           %d (hidden %d, %d heads, vocab %d)\n", c.num_hidden_layers,
                c.hidden_size, c.num_attention_heads, c.vocab_size);
    if (c.is_deepseek()) {
      std::printf("attention        MLA: kv_lora %d, q_lora %s, rope %d, yarn %s%s\n",
                  c.kv_lora_rank, c.q_lora_rank ? std::to_string(c.q_lora_rank).c_str() : "none",
                  c.qk_rope_head_dim, c.rope_scaling.type == "yarn" ? "on" : "off",
                  c.has_indexer() ? ", sparse (DSA indexer)" : "");
      if (c.n_routed_experts)
        std::printf("experts          %d routed (top %d, %s %s), %d shared, first %d dense\n",
                    c.n_routed_experts, c.num_experts_per_tok, c.scoring_func.c_str(),
                    c.topk_method.c_str(), c.n_shared_experts, c.first_k_dense_replace);
      std::printf("MTP modules      %d\n", c.num_nextn_predict_layers);
    } else {
      std::printf("attention        GQA: %d heads, %d kv heads, head dim %d\n",
                  c.num_attention_heads, c.num_key_value_heads, c.dense_head_dim());
    }
    std::printf("parameters       %s total, %s active per token", si(p.total).c_str(),
                si(p.active).c_str());
    if (p.mtp) std::printf(", MTP %s", si(p.mtp).c_str());
    std::printf("\nKV cache         %zu bytes per token (f32 entries)\n", kv);
    std::printf("weights          %sB%s, opened in %.3f s\n",
                si(model->checkpoint().total_bytes()).c_str(), c.fp8 ? " (fp8)" : "", load_s);
    std::printf("SIMD             %s\n", simd_description().c_str());
  });
}

}  // namespace whale
