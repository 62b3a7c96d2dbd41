#include "io/gguf_export.h"

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "model/transformer.h"
#include "text/bpe_trainer.h"

namespace whale {

namespace {

using json = nlohmann::json;

// One GGUF tensor: its name, shape (innermost first), and a producer of its f32 values in that
// order. quantizable: a matrix whale's q8 quantizes (attention, FFN, experts, head).
struct Item {
  std::string name;
  std::vector<int64_t> ne;
  bool quantizable = false;
  DType source = DType::F32;  // as stored in the model (experts: all of them, else F32)
  std::function<void(std::vector<float>&)> fill;
};

int64_t numel(const std::vector<int64_t>& ne) {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

class Plan {
 public:
  std::vector<Item> items;

  void vector(const std::string& name, const Vector& v) {
    check(!v.empty(), "GGUF export: " + name + " is empty");
    const Vector* p = &v;
    items.push_back(
        {name, {static_cast<int64_t>(v.size())}, false, DType::F32, [p](std::vector<float>& out) {
           out.assign(p->data(), p->data() + p->size());
         }});
  }
  // A matrix W [rows, cols] as ne {cols, rows}.
  void matrix(const std::string& name, const Linear& w, bool quantizable) {
    check(!w.empty(), "GGUF export: " + name + " is missing");
    const Linear* p = &w;
    items.push_back({name, {w.cols, w.rows}, quantizable, w.dtype, [p](std::vector<float>& out) {
                       out.resize(static_cast<size_t>(p->rows) * p->cols);
                       for (int r = 0; r < p->rows; ++r)
                         p->row_to_f32(r, out.data() + static_cast<size_t>(r) * p->cols);
                     }});
  }
  // Routed experts' matrices stacked: ne {cols, rows, n_experts}, expert after expert.
  void experts(const std::string& name, std::vector<const Linear*> ws) {
    const Linear& first = *ws.front();
    DType source = first.dtype;
    for (const Linear* w : ws) {
      check(w->rows == first.rows && w->cols == first.cols,
            "GGUF export: " + name + ": experts of different shapes");
      if (w->dtype != source) source = DType::F32;
    }
    items.push_back({name,
                     {first.cols, first.rows, static_cast<int64_t>(ws.size())},
                     true,
                     source,
                     [ws](std::vector<float>& out) {
                       const size_t per = static_cast<size_t>(ws[0]->rows) * ws[0]->cols;
                       out.resize(per * ws.size());
                       for (size_t e = 0; e < ws.size(); ++e)
                         for (int r = 0; r < ws[e]->rows; ++r)
                           ws[e]->row_to_f32(
                               r, out.data() + e * per + static_cast<size_t>(r) * ws[e]->cols);
                     }});
  }
};

// kv_b_proj [heads·(nope + v), kv_lora] split per head as llama.cpp's absorbed MLA wants it:
// attn_k_b ne {nope, kv_lora, heads} (each head's k rows transposed) and attn_v_b
// ne {kv_lora, v, heads}.
void split_kv_b(Plan& plan, const std::string& prefix, const ModelConfig& c, const Linear& kv_b,
                bool quantizable) {
  check(!kv_b.empty(), "GGUF export: " + prefix + "kv_b_proj is missing");
  const int heads = c.num_attention_heads, nope = c.qk_nope_head_dim, vd = c.v_head_dim;
  const int kvr = c.kv_lora_rank;
  const Linear* w = &kv_b;
  auto rows = [w](std::vector<float>& all) {
    all.resize(static_cast<size_t>(w->rows) * w->cols);
    for (int r = 0; r < w->rows; ++r)
      w->row_to_f32(r, all.data() + static_cast<size_t>(r) * w->cols);
  };
  plan.items.push_back({prefix + "attn_k_b.weight",
                        {nope, kvr, heads},
                        quantizable,
                        kv_b.dtype,
                        [=](std::vector<float>& out) {
                          std::vector<float> all;
                          rows(all);
                          out.resize(static_cast<size_t>(heads) * kvr * nope);
                          for (int h = 0; h < heads; ++h)
                            for (int j = 0; j < kvr; ++j)
                              for (int d = 0; d < nope; ++d)
                                out[(static_cast<size_t>(h) * kvr + j) * nope + d] =
                                    all[(static_cast<size_t>(h) * (nope + vd) + d) * kvr + j];
                        }});
  plan.items.push_back(
      {prefix + "attn_v_b.weight",
       {kvr, vd, heads},
       quantizable,
       kv_b.dtype,
       [=](std::vector<float>& out) {
         std::vector<float> all;
         rows(all);
         out.resize(static_cast<size_t>(heads) * vd * kvr);
         for (int h = 0; h < heads; ++h)
           for (int d = 0; d < vd; ++d)
             std::copy_n(all.data() + (static_cast<size_t>(h) * (nope + vd) + nope + d) * kvr, kvr,
                         out.data() + (static_cast<size_t>(h) * vd + d) * kvr);
       }});
}

void plan_block(Plan& plan, const ModelConfig& c, const Layer& layer, int index) {
  const std::string p = "blk." + std::to_string(index) + ".";
  plan.vector(p + "attn_norm.weight", layer.input_layernorm);
  const MlaWeights& a = layer.mla;
  if (c.q_lora_rank > 0) {
    plan.matrix(p + "attn_q_a.weight", a.q_a_proj, true);
    plan.vector(p + "attn_q_a_norm.weight", a.q_a_layernorm);
    plan.matrix(p + "attn_q_b.weight", a.q_b_proj, true);
  } else {
    plan.matrix(p + "attn_q.weight", a.q_proj, true);
  }
  plan.matrix(p + "attn_kv_a_mqa.weight", a.kv_a_proj_with_mqa, true);
  plan.vector(p + "attn_kv_a_norm.weight", a.kv_a_layernorm);
  split_kv_b(plan, p, c, a.kv_b_proj, true);
  plan.matrix(p + "attn_output.weight", a.o_proj, true);
  plan.vector(p + "ffn_norm.weight", layer.post_attention_layernorm);
  if (!layer.is_moe) {
    plan.matrix(p + "ffn_gate.weight", layer.mlp.gate_proj, true);
    plan.matrix(p + "ffn_up.weight", layer.mlp.up_proj, true);
    plan.matrix(p + "ffn_down.weight", layer.mlp.down_proj, true);
    return;
  }
  const Moe& m = layer.moe;
  plan.matrix(p + "ffn_gate_inp.weight", m.router.weight, false);
  if (!m.router.e_score_correction_bias.empty())
    plan.vector(p + "exp_probs_b.bias", m.router.e_score_correction_bias);
  std::vector<const Linear*> gate, up, down;
  for (const FeedForward& e : m.experts) {
    gate.push_back(&e.gate_proj);
    up.push_back(&e.up_proj);
    down.push_back(&e.down_proj);
  }
  plan.experts(p + "ffn_gate_exps.weight", gate);
  plan.experts(p + "ffn_up_exps.weight", up);
  plan.experts(p + "ffn_down_exps.weight", down);
  if (m.has_shared) {
    plan.matrix(p + "ffn_gate_shexp.weight", m.shared.gate_proj, true);
    plan.matrix(p + "ffn_up_shexp.weight", m.shared.up_proj, true);
    plan.matrix(p + "ffn_down_shexp.weight", m.shared.down_proj, true);
  }
}

GgmlType choose_type(const Item& item, GgufQuant quant) {
  if (item.ne.size() == 1 || quant == GgufQuant::kF32) return GgmlType::kF32;
  if (quant == GgufQuant::kBF16) return GgmlType::kBF16;
  // The matrices whale's quantization covers, when their rows split into blocks of 32: q8_0, or
  // q4_1 except matrices already 8-bit and a head that is not q4 already (whale's q4 keeps its
  // head q8 unless converted with --head q4).
  if (item.quantizable && item.ne[0] % 32 == 0) {
    if (quant == GgufQuant::kQ8_0 || item.source == DType::I8 ||
        (item.name == "output.weight" && item.source != DType::U8))
      return GgmlType::kQ8_0;
    return GgmlType::kQ4_1;
  }
  return item.source == DType::BF16 ? GgmlType::kBF16 : GgmlType::kF32;
}

std::vector<uint8_t> encode(const std::vector<float>& values, int64_t row, GgmlType type) {
  std::vector<uint8_t> out(ggml_row_bytes(type, row) * (values.size() / row));
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(out.data(), values.data(), out.size());
      break;
    case GgmlType::kBF16:
    case GgmlType::kF16:
      for (size_t i = 0; i < values.size(); ++i) {
        uint16_t v = type == GgmlType::kBF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
        std::memcpy(out.data() + 2 * i, &v, 2);
      }
      break;
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_1: {
      const auto quantize_row = type == GgmlType::kQ8_0 ? quantize_row_q8_0 : quantize_row_q4_1;
      const size_t rows = values.size() / row, bytes = ggml_row_bytes(type, row);
#pragma omp parallel for schedule(static)
      for (size_t r = 0; r < rows; ++r)
        quantize_row(values.data() + r * row, row, out.data() + r * bytes);
      break;
    }
  }
  return out;
}

// The tokenizer as llama.cpp's BPE ("gpt2") vocabulary: tokens by id (gaps as unused
// placeholders), their types, the merges, and the pre-tokenizer's llama.cpp name.
void add_tokenizer(GgufWriter& out, const std::string& dir, const ModelConfig& c) {
  const std::string path = dir + "/tokenizer.json";
  if (!std::filesystem::exists(path)) {
    // No text vocabulary: llama.cpp then runs on token ids only.
    out.add("tokenizer.ggml.model", GgufValue::str("none"));
    return;
  }
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
  check(j.contains("model") && j["model"].value("type", "BPE") == "BPE" &&
            j["model"].contains("vocab") && j["model"]["vocab"].is_object(),
        path + ": GGUF export needs a BPE tokenizer (model.type BPE with a vocab)");
  const int V = c.vocab_size;
  std::vector<std::string> tokens(V);
  std::vector<int> types(V, 5);  // unused until a token claims the id
  for (int i = 0; i < V; ++i) tokens[i] = "[PAD" + std::to_string(i) + "]";
  auto put = [&](int id, const std::string& text, int type) {
    check(id >= 0 && id < V, path + ": token id " + std::to_string(id) +
                                 " is outside the model's vocabulary of " + std::to_string(V));
    tokens[id] = text;
    types[id] = type;
  };
  for (auto& [text, id] : j["model"]["vocab"].items()) {
    check(id.is_number_integer(), path + ": vocab entry '" + text + "' has no integer id");
    put(id.get<int>(), text, 1);
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const json& t : j["added_tokens"]) {
      check(t.contains("id") && t["id"].is_number_integer() && t.contains("content") &&
                t["content"].is_string(),
            path + ": an added token lacks its id or content");
      put(t["id"].get<int>(), t["content"].get<std::string>(), t.value("special", false) ? 3 : 4);
    }
  std::vector<std::string> merges;
  if (j["model"].contains("merges") && j["model"]["merges"].is_array())
    for (const json& m : j["model"]["merges"]) {
      if (m.is_string()) {
        merges.push_back(m.get<std::string>());
      } else {
        check(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
              path + ": a merge is neither \"a b\" nor [a, b]");
        merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      }
    }
  // whale's BPE trainer writes DeepSeek-V3's pre-tokenizer verbatim; llama.cpp knows it as
  // "deepseek-v3". Anything else falls back to llama.cpp's default (GPT-2-like) split.
  std::string pre = "default";
  if (j.contains("pre_tokenizer") &&
      j["pre_tokenizer"] == json::parse(text::deepseek_v3_pre_tokenizer_json()))
    pre = "deepseek-v3";
  out.add("tokenizer.ggml.model", GgufValue::str("gpt2"));
  out.add("tokenizer.ggml.pre", GgufValue::str(pre));
  out.add("tokenizer.ggml.tokens", GgufValue::str_array(std::move(tokens)));
  out.add("tokenizer.ggml.token_type", GgufValue::i32_array(types));
  out.add("tokenizer.ggml.merges", GgufValue::str_array(std::move(merges)));
  out.add("tokenizer.ggml.bos_token_id", GgufValue::u32(c.bos_token_id));
  if (!c.eos_token_ids.empty())
    out.add("tokenizer.ggml.eos_token_id", GgufValue::u32(c.eos_token_ids[0]));
  out.add("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  out.add("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));
}

}  // namespace

void export_gguf(const std::string& model_dir, const std::string& out_path,
                 const GgufExportOptions& options) {
  auto model = Model::load(model_dir);
  const ModelConfig& c = model->config();
  const Weights& w = model->weights();
  check(c.is_deepseek() && c.kv_lora_rank > 0,
        "GGUF export writes llama.cpp's deepseek2 architecture: " + model_dir + " is a " +
            c.model_type + " model (llama.cpp's own converter handles Qwen2 and Llama)");
  check(!c.has_indexer(),
        "GGUF export: V3.2 (sparse attention) is llama.cpp's deepseek32 "
        "architecture, which whale does not write");
  check(c.moe_layer_freq == 1,
        "GGUF export: llama.cpp's deepseek2 needs every layer after the "
        "leading dense ones to be MoE (moe_layer_freq 1)");
  check(c.topk_method != "group_limited_greedy" || c.n_group <= 1,
        "GGUF export: llama.cpp scores expert groups by their two best experts (V3's noaux_tc); "
        "V2's group_limited_greedy (best expert) has no deepseek2 equivalent");
  const bool mtp = options.mtp && w.has_mtp;
  const int L = c.num_hidden_layers;

  GgufWriter out(out_path);
  const std::string a = "deepseek2.";
  out.add("general.architecture", GgufValue::str("deepseek2"));
  out.add("general.name", GgufValue::str(std::filesystem::path(model_dir).filename().string()));
  // llama.cpp's LLAMA_FTYPE_ALL_F32, MOSTLY_BF16, MOSTLY_Q8_0, MOSTLY_Q4_1.
  const uint32_t file_type = options.quant == GgufQuant::kF32    ? 0
                             : options.quant == GgufQuant::kBF16 ? 32
                             : options.quant == GgufQuant::kQ8_0 ? 7
                                                                 : 3;
  out.add("general.file_type", GgufValue::u32(file_type));
  out.add("general.quantization_version", GgufValue::u32(2));
  out.add(a + "block_count", GgufValue::u32(L + (mtp ? 1 : 0)));
  if (mtp) out.add(a + "nextn_predict_layers", GgufValue::u32(1));
  out.add(a + "context_length", GgufValue::u32(c.max_position_embeddings));
  out.add(a + "embedding_length", GgufValue::u32(c.hidden_size));
  out.add(a + "feed_forward_length", GgufValue::u32(c.intermediate_size));
  out.add(a + "attention.head_count", GgufValue::u32(c.num_attention_heads));
  out.add(a + "attention.head_count_kv", GgufValue::u32(1));  // MLA runs as MQA over latents
  out.add(a + "rope.freq_base", GgufValue::f32(c.rope_theta));
  out.add(a + "attention.layer_norm_rms_epsilon", GgufValue::f32(c.rms_norm_eps));
  out.add(a + "vocab_size", GgufValue::u32(c.vocab_size));
  out.add(a + "leading_dense_block_count",
          GgufValue::u32(c.n_routed_experts > 0 ? c.first_k_dense_replace : L));
  // Written even without q-LoRA: llama.cpp requires the key for every model it does not
  // recognise as V2-Lite by its layer count, and 0 selects the plain query projection.
  out.add(a + "attention.q_lora_rank", GgufValue::u32(c.q_lora_rank));
  out.add(a + "attention.kv_lora_rank", GgufValue::u32(c.kv_lora_rank));
  out.add(a + "attention.key_length", GgufValue::u32(c.kv_lora_rank + c.qk_rope_head_dim));
  out.add(a + "attention.value_length", GgufValue::u32(c.kv_lora_rank));
  out.add(a + "attention.key_length_mla", GgufValue::u32(c.qk_head_dim()));
  out.add(a + "attention.value_length_mla", GgufValue::u32(c.v_head_dim));
  out.add(a + "rope.dimension_count", GgufValue::u32(c.qk_rope_head_dim));
  if (c.n_routed_experts > 0) {
    out.add(a + "expert_feed_forward_length", GgufValue::u32(c.moe_intermediate_size));
    out.add(a + "expert_count", GgufValue::u32(c.n_routed_experts));
    out.add(a + "expert_used_count", GgufValue::u32(c.num_experts_per_tok));
    out.add(a + "expert_shared_count", GgufValue::u32(c.n_shared_experts));
    out.add(a + "expert_weights_scale", GgufValue::f32(c.routed_scaling_factor));
    if (c.norm_topk_prob) out.add(a + "expert_weights_norm", GgufValue::boolean(true));
    // llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE: 1 softmax, 2 sigmoid.
    out.add(a + "expert_gating_func", GgufValue::u32(c.scoring_func == "sigmoid" ? 2 : 1));
    if (c.topk_method != "greedy" && c.n_group > 1) {
      out.add(a + "expert_group_count", GgufValue::u32(c.n_group));
      out.add(a + "expert_group_used_count", GgufValue::u32(c.topk_group));
    }
  }
  if (c.rope_scaling.type == "yarn") {
    const RopeScaling& y = c.rope_scaling;
    out.add(a + "rope.scaling.type", GgufValue::str("yarn"));
    out.add(a + "rope.scaling.factor", GgufValue::f32(y.factor));
    out.add(a + "rope.scaling.original_context_length",
            GgufValue::u32(static_cast<uint64_t>(y.original_max_position_embeddings)));
    out.add(a + "rope.scaling.yarn_beta_fast", GgufValue::f32(y.beta_fast));
    out.add(a + "rope.scaling.yarn_beta_slow", GgufValue::f32(y.beta_slow));
    // llama.cpp's converter writes 0.1·mscale_all_dim here and its loader divides it back.
    out.add(a + "rope.scaling.yarn_log_multiplier", GgufValue::f32(0.1 * y.mscale_all_dim));
  } else {
    check(c.rope_scaling.type.empty(),
          "GGUF export: rope scaling '" + c.rope_scaling.type + "' has no deepseek2 equivalent");
  }
  add_tokenizer(out, model_dir, c);

  Plan plan;
  plan.matrix("token_embd.weight", w.embed_tokens, false);
  plan.vector("output_norm.weight", w.norm);
  plan.matrix("output.weight", w.lm_head, true);
  for (int l = 0; l < L; ++l) plan_block(plan, c, w.layers[l], l);
  if (mtp) {
    const std::string p = "blk." + std::to_string(L) + ".";
    plan_block(plan, c, w.mtp.block, L);
    plan.matrix(p + "nextn.eh_proj.weight", w.mtp.eh_proj, false);
    plan.vector(p + "nextn.enorm.weight", w.mtp.enorm);
    plan.vector(p + "nextn.hnorm.weight", w.mtp.hnorm);
    plan.matrix(p + "nextn.embed_tokens.weight", w.mtp.embed_tokens, false);
    plan.matrix(p + "nextn.shared_head_head.weight", w.mtp.shared_head_head, false);
    plan.vector(p + "nextn.shared_head_norm.weight", w.mtp.shared_head_norm);
  }
  size_t total = 0;
  std::vector<GgmlType> types;
  for (const Item& item : plan.items) {
    types.push_back(choose_type(item, options.quant));
    out.add_tensor(item.name, item.ne, types.back());
    total += ggml_row_bytes(types.back(), item.ne[0]) * (numel(item.ne) / item.ne[0]);
  }
  Progress progress(options.progress ? "gguf" : "", total, "B");
  std::vector<float> values;
  for (size_t i = 0; i < plan.items.size(); ++i) {
    const Item& item = plan.items[i];
    item.fill(values);
    check(static_cast<int64_t>(values.size()) == numel(item.ne),
          "GGUF export: " + item.name + " produced the wrong number of values");
    std::vector<uint8_t> bytes = encode(values, item.ne[0], types[i]);
    out.write_next(bytes.data(), bytes.size());
    progress.advance(bytes.size());
  }
  out.finish();
  progress.finish();
}

}  // namespace whale
