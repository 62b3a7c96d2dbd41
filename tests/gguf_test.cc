// GGUF: the writer and the hostile-input-safe reader round-trip; malformed files are clear
// errors; `whale convert --to gguf` writes llama.cpp's deepseek2 layout with every tensor equal
// to the source (f32 exactly, bf16 exactly from bf16, q8_0 within its rounding), kv_b_proj
// recoverable from attn_k_b/attn_v_b, experts stacked, MTP as nextn, and the metadata llama.cpp
// reads.
#include "io/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "base/file.h"
#include "io/gguf_export.h"
#include "model/random_init.h"
#include "model/transformer.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::run_whale;
using testing::TempDir;

std::string small_gguf(const std::string& path) {
  GgufWriter w(path);
  w.add("general.architecture", GgufValue::str("test"));
  w.add("a.u32", GgufValue::u32(7));
  w.add("a.f32", GgufValue::f32(0.5));
  w.add("a.bool", GgufValue::boolean(true));
  w.add("a.strings", GgufValue::str_array({"x", "", "yz"}));
  w.add("a.ints", GgufValue::i32_array({-1, 2, 3}));
  w.add_tensor("t.f32", {3, 2}, GgmlType::kF32);
  w.add_tensor("t.q8", {32, 2}, GgmlType::kQ8_0);
  w.add_tensor("t.bf16", {5}, GgmlType::kBF16);
  const float f[6] = {1, 2, 3, 4, 5, 6};
  w.write_next(f, sizeof f);
  std::vector<float> q(64);
  for (int i = 0; i < 64; ++i) q[i] = (i - 30) * 0.25f;
  std::vector<uint8_t> qb(68);
  quantize_row_q8_0(q.data(), 32, qb.data());
  quantize_row_q8_0(q.data() + 32, 32, qb.data() + 34);
  w.write_next(qb.data(), qb.size());
  const uint16_t b[5] = {f32_to_bf16(1), f32_to_bf16(-2), 0, f32_to_bf16(0.5f), 0};
  w.write_next(b, sizeof b);
  w.finish();
  return read_file(path);
}

TEST(Gguf, WriteReadRoundTrip) {
  TempDir tmp;
  std::string bytes = small_gguf(tmp / "a.gguf");
  EXPECT_EQ(bytes.substr(0, 4), "GGUF");
  GgufFile g(tmp / "a.gguf");
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.get("general.architecture").text(), "test");
  EXPECT_EQ(g.get("a.u32").number(), 7);
  EXPECT_EQ(g.get("a.u32").type, GgufType::kU32);
  EXPECT_EQ(g.get("a.f32").number(), 0.5);
  EXPECT_EQ(g.get("a.bool").type, GgufType::kBool);
  EXPECT_EQ(g.get("a.strings").strings, (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(g.get("a.ints").numbers, (std::vector<double>{-1, 2, 3}));
  ASSERT_EQ(g.tensors().size(), 3u);
  for (const GgufTensorInfo& t : g.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
  EXPECT_EQ(g.to_f32(g.tensor("t.f32")), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  std::vector<float> q = g.to_f32(g.tensor("t.q8"));
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(q[i], (i - 30) * 0.25f, 8.25 / 127 / 2 * 1.01) << i;
  EXPECT_EQ(g.to_f32(g.tensor("t.bf16")), (std::vector<float>{1, -2, 0, 0.5f, 0}));
  EXPECT_THROW(g.tensor("nope"), Error);
  EXPECT_THROW(g.get("nope"), Error);
}

// Every prefix of a valid file, and files with one field corrupted, are errors, not crashes.
TEST(Gguf, MalformedFilesAreErrors) {
  TempDir tmp;
  const std::string good = small_gguf(tmp / "good.gguf");
  const std::string bad = tmp / "bad.gguf";
  // Prefixes that end inside the final padding still hold every byte the tensors declare; all
  // shorter ones must be refused.
  for (size_t n = 0; n + 32 < good.size(); ++n) {
    std::ofstream(bad, std::ios::binary | std::ios::trunc) << good.substr(0, n);
    try {
      GgufFile g(bad);
      ADD_FAILURE() << "a prefix of " << n << " bytes was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  auto expect_error = [&](std::string bytes, const std::string& words) {
    write_file_atomic(bad, bytes);
    try {
      GgufFile g(bad);
      ADD_FAILURE() << "no error for: " << words;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  auto patch = [&](size_t at, const void* v, size_t n) {
    std::string b = good;
    std::memcpy(b.data() + at, v, n);
    return b;
  };
  expect_error(patch(0, "GGUX", 4), "bad magic");
  uint32_t version = 1;
  expect_error(patch(4, &version, 4), "version 1");
  uint64_t huge = uint64_t{1} << 60;
  expect_error(patch(8, &huge, 8), "tensor count");
  expect_error(patch(16, &huge, 8), "metadata count");
  expect_error(patch(24, &huge, 8), "length");  // the first key's length
  // The first tensor info follows the metadata: find it by its name.
  const size_t name_at = good.find("t.f32");
  ASSERT_NE(name_at, std::string::npos);
  uint32_t dims = 9;
  expect_error(patch(name_at + 5, &dims, 4), "dimensions");
  int64_t neg = -3;
  expect_error(patch(name_at + 9, &neg, 8), "shape");
  uint32_t type = 99;
  expect_error(patch(name_at + 9 + 16, &type, 4), "ggml type 99");
  uint64_t offset = 1 << 20;
  expect_error(patch(name_at + 9 + 16 + 4, &offset, 8), "runs past the end");
  offset = 3;
  expect_error(patch(name_at + 9 + 16 + 4, &offset, 8), "not aligned");
  EXPECT_THROW(GgufFile(tmp / "missing.gguf"), Error);
}

struct Exported {
  std::unique_ptr<Model> model;
  std::unique_ptr<GgufFile> gguf;
};

std::vector<float> rows_of(const Linear& w) {
  std::vector<float> out(static_cast<size_t>(w.rows) * w.cols);
  for (int r = 0; r < w.rows; ++r) w.row_to_f32(r, out.data() + static_cast<size_t>(r) * w.cols);
  return out;
}

std::vector<int64_t> ne(std::initializer_list<int64_t> v) {
  return v;
}

// Every tensor of `g` against the model it came from; tol 0 means exact.
void check_tensors(const Model& m, const GgufFile& g, double q8_tolerance) {
  const ModelConfig& c = m.config();
  const Weights& w = m.weights();
  auto expect_matrix = [&](const std::string& name, const Linear& src) {
    SCOPED_TRACE(name);
    const GgufTensorInfo& t = g.tensor(name);
    EXPECT_EQ(t.ne, ne({src.cols, src.rows}));
    std::vector<float> got = g.to_f32(t), want = rows_of(src);
    if (t.type == GgmlType::kQ8_0) {
      // Per block of 32: error at most half a step of scale amax/127 (plus f16 rounding).
      for (size_t b = 0; b < want.size() / 32; ++b) {
        float amax = 0;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(want[b * 32 + i]));
        for (int i = 0; i < 32; ++i)
          ASSERT_LE(std::fabs(got[b * 32 + i] - want[b * 32 + i]), amax / 127 * q8_tolerance)
              << "element " << b * 32 + i;
      }
    } else {
      EXPECT_EQ(got, want);
    }
  };
  auto expect_vector = [&](const std::string& name, const Vector& v) {
    SCOPED_TRACE(name);
    const GgufTensorInfo& t = g.tensor(name);
    EXPECT_EQ(t.type, GgmlType::kF32);
    EXPECT_EQ(g.to_f32(t), std::vector<float>(v.data(), v.data() + v.size()));
  };
  expect_matrix("token_embd.weight", w.embed_tokens);
  expect_matrix("output.weight", w.lm_head);
  expect_vector("output_norm.weight", w.norm);
  const int heads = c.num_attention_heads, nope = c.qk_nope_head_dim, vd = c.v_head_dim;
  const int kvr = c.kv_lora_rank;
  for (int l = 0; l <= c.num_hidden_layers; ++l) {
    const Layer& layer = l < c.num_hidden_layers ? w.layers[l] : w.mtp.block;
    const std::string p = "blk." + std::to_string(l) + ".";
    expect_vector(p + "attn_norm.weight", layer.input_layernorm);
    expect_vector(p + "ffn_norm.weight", layer.post_attention_layernorm);
    expect_matrix(p + "attn_q_a.weight", layer.mla.q_a_proj);
    expect_vector(p + "attn_q_a_norm.weight", layer.mla.q_a_layernorm);
    expect_matrix(p + "attn_q_b.weight", layer.mla.q_b_proj);
    expect_matrix(p + "attn_kv_a_mqa.weight", layer.mla.kv_a_proj_with_mqa);
    expect_vector(p + "attn_kv_a_norm.weight", layer.mla.kv_a_layernorm);
    expect_matrix(p + "attn_output.weight", layer.mla.o_proj);
    // kv_b_proj back from the split: row h·(nope+v) + d, column j.
    const GgufTensorInfo& kb = g.tensor(p + "attn_k_b.weight");
    const GgufTensorInfo& vb = g.tensor(p + "attn_v_b.weight");
    EXPECT_EQ(kb.ne, ne({nope, kvr, heads}));
    EXPECT_EQ(vb.ne, ne({kvr, vd, heads}));
    std::vector<float> k = g.to_f32(kb), v = g.to_f32(vb), kv = rows_of(layer.mla.kv_b_proj);
    float amax = 0;
    for (float x : kv) amax = std::max(amax, std::fabs(x));
    // q8_0: at most half a step of a block's scale, itself at most amax / 127.
    const float k_tol = kb.type == GgmlType::kQ8_0 ? amax / 127 * q8_tolerance : 0;
    const float v_tol = vb.type == GgmlType::kQ8_0 ? amax / 127 * q8_tolerance : 0;
    for (int h = 0; h < heads; ++h)
      for (int j = 0; j < kvr; ++j) {
        for (int d = 0; d < nope; ++d)
          ASSERT_LE(std::fabs(k[(static_cast<size_t>(h) * kvr + j) * nope + d] -
                              kv[(static_cast<size_t>(h) * (nope + vd) + d) * kvr + j]),
                    k_tol);
        for (int d = 0; d < vd; ++d)
          ASSERT_LE(std::fabs(v[(static_cast<size_t>(h) * vd + d) * kvr + j] -
                              kv[(static_cast<size_t>(h) * (nope + vd) + nope + d) * kvr + j]),
                    v_tol);
      }
    if (!layer.is_moe) {
      expect_matrix(p + "ffn_gate.weight", layer.mlp.gate_proj);
      expect_matrix(p + "ffn_up.weight", layer.mlp.up_proj);
      expect_matrix(p + "ffn_down.weight", layer.mlp.down_proj);
      continue;
    }
    expect_matrix(p + "ffn_gate_inp.weight", layer.moe.router.weight);
    expect_vector(p + "exp_probs_b.bias", layer.moe.router.e_score_correction_bias);
    expect_matrix(p + "ffn_gate_shexp.weight", layer.moe.shared.gate_proj);
    expect_matrix(p + "ffn_up_shexp.weight", layer.moe.shared.up_proj);
    expect_matrix(p + "ffn_down_shexp.weight", layer.moe.shared.down_proj);
    const std::pair<const char*, Linear FeedForward::*> stacks[] = {
        {"ffn_gate_exps", &FeedForward::gate_proj},
        {"ffn_up_exps", &FeedForward::up_proj},
        {"ffn_down_exps", &FeedForward::down_proj}};
    for (const auto& [name, member] : stacks) {
      const GgufTensorInfo& t = g.tensor(p + name + ".weight");
      const Linear& e0 = layer.moe.experts[0].*member;
      EXPECT_EQ(t.ne, ne({e0.cols, e0.rows, c.n_routed_experts})) << name;
      std::vector<float> all = g.to_f32(t);
      const size_t per = static_cast<size_t>(e0.rows) * e0.cols;
      for (int e = 0; e < c.n_routed_experts; ++e) {
        std::vector<float> want = rows_of(layer.moe.experts[e].*member);
        std::vector<float> got(all.begin() + e * per, all.begin() + (e + 1) * per);
        if (t.type == GgmlType::kQ8_0)
          EXPECT_LT(testing::relative_max_error(got, want), 0.01) << name << " expert " << e;
        else
          EXPECT_EQ(got, want) << name << " expert " << e;
      }
    }
  }
  const std::string n = "blk." + std::to_string(c.num_hidden_layers) + ".nextn.";
  expect_matrix(n + "eh_proj.weight", w.mtp.eh_proj);
  expect_vector(n + "enorm.weight", w.mtp.enorm);
  expect_vector(n + "hnorm.weight", w.mtp.hnorm);
  expect_matrix(n + "embed_tokens.weight", w.mtp.embed_tokens);
  expect_matrix(n + "shared_head_head.weight", w.mtp.shared_head_head);
  expect_vector(n + "shared_head_norm.weight", w.mtp.shared_head_norm);
}

TEST(Gguf, ExportTinyModel) {
  TempDir tmp;
  ModelConfig c = preset_config("tiny");
  c.hidden_size = 64;
  c.moe_intermediate_size = 32;
  for (DType dtype : {DType::F32, DType::BF16}) {
    const std::string dir = tmp / (dtype == DType::F32 ? "f32" : "bf16");
    InitOptions init;
    init.dtype = dtype;
    write_random_model(c, dir, init);
    // A non-zero routing bias and norms, so that a mix-up of tensors shows.
    auto model = Model::load(dir);
    for (const char* quant : {"f32", "bf16", "q8_0"}) {
      SCOPED_TRACE(std::string(dtype == DType::F32 ? "f32" : "bf16") + " → " + quant);
      const std::string out = tmp / (std::string(quant) + ".gguf");
      auto r =
          run_whale("convert --to gguf --model " + dir + " --quant " + quant + " --out " + out);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      GgufFile g(out);
      if (std::string(quant) == "f32" || (dtype == DType::BF16 && std::string(quant) == "bf16"))
        check_tensors(*model, g, 0);
      else if (std::string(quant) == "q8_0")
        check_tensors(*model, g, 0.5 * 1.01);
      EXPECT_EQ(g.get("general.architecture").text(), "deepseek2");
      EXPECT_EQ(g.get("deepseek2.block_count").number(), c.num_hidden_layers + 1);
      EXPECT_EQ(g.get("deepseek2.nextn_predict_layers").number(), 1);
      EXPECT_EQ(g.get("deepseek2.embedding_length").number(), c.hidden_size);
      EXPECT_EQ(g.get("deepseek2.attention.head_count").number(), c.num_attention_heads);
      EXPECT_EQ(g.get("deepseek2.attention.head_count_kv").number(), 1);
      EXPECT_EQ(g.get("deepseek2.attention.q_lora_rank").number(), c.q_lora_rank);
      EXPECT_EQ(g.get("deepseek2.attention.kv_lora_rank").number(), c.kv_lora_rank);
      EXPECT_EQ(g.get("deepseek2.attention.key_length").number(),
                c.kv_lora_rank + c.qk_rope_head_dim);
      EXPECT_EQ(g.get("deepseek2.attention.value_length").number(), c.kv_lora_rank);
      EXPECT_EQ(g.get("deepseek2.attention.key_length_mla").number(), c.qk_head_dim());
      EXPECT_EQ(g.get("deepseek2.attention.value_length_mla").number(), c.v_head_dim);
      EXPECT_EQ(g.get("deepseek2.rope.dimension_count").number(), c.qk_rope_head_dim);
      EXPECT_EQ(g.get("deepseek2.leading_dense_block_count").number(), c.first_k_dense_replace);
      EXPECT_EQ(g.get("deepseek2.expert_count").number(), c.n_routed_experts);
      EXPECT_EQ(g.get("deepseek2.expert_used_count").number(), c.num_experts_per_tok);
      EXPECT_EQ(g.get("deepseek2.expert_shared_count").number(), c.n_shared_experts);
      EXPECT_EQ(g.get("deepseek2.expert_feed_forward_length").number(), c.moe_intermediate_size);
      EXPECT_EQ(g.get("deepseek2.expert_group_count").number(), c.n_group);
      EXPECT_EQ(g.get("deepseek2.expert_group_used_count").number(), c.topk_group);
      EXPECT_EQ(g.get("deepseek2.expert_gating_func").number(), 2);  // sigmoid
      EXPECT_EQ(g.get("deepseek2.expert_weights_norm").type, GgufType::kBool);
      EXPECT_FLOAT_EQ(g.get("deepseek2.expert_weights_scale").number(), 2.5);
      EXPECT_FLOAT_EQ(g.get("deepseek2.attention.layer_norm_rms_epsilon").number(), 1e-6);
      EXPECT_EQ(g.get("deepseek2.vocab_size").number(), c.vocab_size);
      EXPECT_EQ(g.get("tokenizer.ggml.model").text(), "none");
      const int q8 = std::string(quant) == "q8_0" ? 7 : std::string(quant) == "bf16" ? 32 : 0;
      EXPECT_EQ(g.get("general.file_type").number(), q8);
      if (std::string(quant) == "q8_0") {
        EXPECT_EQ(g.tensor("blk.1.ffn_gate_exps.weight").type, GgmlType::kQ8_0);
        // Rows of 16 cannot be q8_0, and router gates are kept: as stored (bf16), else f32.
        const GgmlType kept = dtype == DType::BF16 ? GgmlType::kBF16 : GgmlType::kF32;
        EXPECT_EQ(g.tensor("blk.0.attn_k_b.weight").type, kept);
        EXPECT_EQ(g.tensor("blk.0.attn_v_b.weight").type, GgmlType::kQ8_0);
        EXPECT_EQ(g.tensor("blk.1.ffn_gate_inp.weight").type, kept);
      }
    }
  }
  // --no-mtp leaves the module out and counts only the main blocks.
  auto r = run_whale("convert --to gguf --no-mtp --model " + (tmp / "bf16") + " --out " +
                     (tmp / "n.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  GgufFile g(tmp / "n.gguf");
  EXPECT_EQ(g.get("deepseek2.block_count").number(), c.num_hidden_layers);
  EXPECT_EQ(g.metadata().count("deepseek2.nextn_predict_layers"), 0u);
  EXPECT_THROW(g.tensor("blk.2.nextn.eh_proj.weight"), Error);
  EXPECT_EQ(g.tensor("blk.1.attn_norm.weight").type, GgmlType::kF32);
}

// A whale q4 model exports to q4_1 exactly (the same groups, scales and minimums in llama.cpp's
// block layout), its q8 head as q8_0.
TEST(Gguf, ExportQ4ModelAsQ4_1) {
  TempDir tmp;
  ModelConfig c = preset_config("tiny");
  c.hidden_size = 64;
  c.moe_intermediate_size = 32;
  InitOptions init;
  init.dtype = DType::BF16;
  write_random_model(c, tmp / "bf16", init);
  auto r = run_whale("convert --model " + (tmp / "bf16") + " --quant q4 --out " + (tmp / "q4"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_whale("convert --to gguf --model " + (tmp / "q4") + " --quant q4_1 --out " +
                (tmp / "q4.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  GgufFile g(tmp / "q4.gguf");
  EXPECT_EQ(g.get("general.file_type").number(), 3);
  EXPECT_EQ(g.tensor("blk.1.ffn_gate_exps.weight").type, GgmlType::kQ4_1);
  EXPECT_EQ(g.tensor("blk.0.attn_v_b.weight").type, GgmlType::kQ4_1);
  EXPECT_EQ(g.tensor("output.weight").type, GgmlType::kQ8_0);
  // Rows of 16 stay as they were computed (f32); router gates as stored.
  EXPECT_EQ(g.tensor("blk.0.attn_k_b.weight").type, GgmlType::kF32);
  EXPECT_EQ(g.tensor("blk.1.ffn_gate_inp.weight").type, GgmlType::kBF16);
  auto model = Model::load(tmp / "q4");
  check_tensors(*model, g, 0.5 * 1.01);  // q4_1: exact; the q8 head within q8_0's rounding
}

TEST(Gguf, ExportTokenizerYarnAndErrors) {
  TempDir tmp;
  // A whale-trained tokenizer (DeepSeek-V3's pre-tokenizer) and a YaRN, q-LoRA-free config.
  ModelConfig c = preset_config("tiny");
  c.vocab_size = 1000;
  c.q_lora_rank = 0;
  c.rope_scaling.type = "yarn";
  c.rope_scaling.factor = 40;
  c.rope_scaling.mscale = 1;
  c.rope_scaling.mscale_all_dim = 1;
  c.rope_scaling.original_max_position_embeddings = 4096;
  write_random_model(c, tmp / "m", {});
  std::filesystem::copy_file(testing::source_dir() + "/tests/text/bpe/expected/tokenizer.json",
                             tmp / "m/tokenizer.json");
  auto r = run_whale("convert --to gguf --model " + (tmp / "m") + " --out " + (tmp / "m.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  GgufFile g(tmp / "m.gguf");
  EXPECT_EQ(g.get("tokenizer.ggml.model").text(), "gpt2");
  EXPECT_EQ(g.get("tokenizer.ggml.pre").text(), "deepseek-v3");
  EXPECT_EQ(g.get("tokenizer.ggml.tokens").strings.size(), 1000u);
  EXPECT_EQ(g.get("tokenizer.ggml.tokens").strings[0], "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(g.get("tokenizer.ggml.token_type").numbers[0], 3);  // control
  EXPECT_EQ(g.get("tokenizer.ggml.token_type").numbers[500], 1);
  EXPECT_EQ(g.get("tokenizer.ggml.merges").strings.size(), 742u);
  EXPECT_EQ(g.get("tokenizer.ggml.bos_token_id").number(), 0);
  EXPECT_EQ(g.get("tokenizer.ggml.eos_token_id").number(), 1);
  EXPECT_EQ(g.get("deepseek2.attention.q_lora_rank").number(), 0);
  g.tensor("blk.0.attn_q.weight");
  EXPECT_EQ(g.get("deepseek2.rope.scaling.type").text(), "yarn");
  EXPECT_EQ(g.get("deepseek2.rope.scaling.factor").number(), 40);
  EXPECT_EQ(g.get("deepseek2.rope.scaling.original_context_length").number(), 4096);
  EXPECT_FLOAT_EQ(g.get("deepseek2.rope.scaling.yarn_log_multiplier").number(), 0.1);

  // Architectures deepseek2 cannot hold are one-line errors; nothing is left behind.
  write_random_model(preset_config("tiny-llama"), tmp / "l", {});
  r = run_whale("convert --to gguf --model " + (tmp / "l") + " --out " + (tmp / "l.gguf"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("deepseek2"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp / "l.gguf"));
  r = run_whale("convert --to gguf --model " + (tmp / "m") + " --quant q4 --out " + (tmp / "x"));
  EXPECT_EQ(r.exit_code, 1);
}

}  // namespace
}  // namespace whale
