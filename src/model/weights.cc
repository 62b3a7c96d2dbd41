#include "model/weights.h"

#include <omp.h>

#include <cstring>

#include "base/error.h"
#include "ops/group_lanes.h"
#include "ops/precision.h"

namespace whale {

namespace {

// The one place that knows every tensor name and shape. A visitor sees each tensor with the
// slot it fills: matrix(name, rows, cols, quantizable, Linear&) and
// vector(name, n, kind, Vector&).
template <class Visitor>
void visit_ffn(const std::string& prefix, int hidden, int inter, bool bias, FeedForward& f,
               Visitor& v) {
  v.matrix(prefix + "gate_proj.weight", inter, hidden, true, f.gate_proj);
  v.matrix(prefix + "up_proj.weight", inter, hidden, true, f.up_proj);
  v.matrix(prefix + "down_proj.weight", hidden, inter, true, f.down_proj);
  if (bias) {
    v.vector(prefix + "gate_proj.bias", inter, WeightSpec::kBias, f.gate_bias);
    v.vector(prefix + "up_proj.bias", inter, WeightSpec::kBias, f.up_bias);
    v.vector(prefix + "down_proj.bias", hidden, WeightSpec::kBias, f.down_bias);
  }
}

template <class Visitor>
void visit_layer(const ModelConfig& c, int index, Layer& layer, Visitor& v) {
  const std::string p = "model.layers." + std::to_string(index) + ".";
  const int H = c.hidden_size;
  v.vector(p + "input_layernorm.weight", H, WeightSpec::kNormWeight, layer.input_layernorm);
  v.vector(p + "post_attention_layernorm.weight", H, WeightSpec::kNormWeight,
           layer.post_attention_layernorm);
  if (c.is_deepseek()) {
    const std::string a = p + "self_attn.";
    const int heads = c.num_attention_heads;
    MlaWeights& m = layer.mla;
    if (c.q_lora_rank > 0) {
      v.matrix(a + "q_a_proj.weight", c.q_lora_rank, H, true, m.q_a_proj);
      v.vector(a + "q_a_layernorm.weight", c.q_lora_rank, WeightSpec::kNormWeight, m.q_a_layernorm);
      v.matrix(a + "q_b_proj.weight", heads * c.qk_head_dim(), c.q_lora_rank, true, m.q_b_proj);
    } else {
      v.matrix(a + "q_proj.weight", heads * c.qk_head_dim(), H, true, m.q_proj);
    }
    v.matrix(a + "kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, H, true,
             m.kv_a_proj_with_mqa);
    v.vector(a + "kv_a_layernorm.weight", c.kv_lora_rank, WeightSpec::kNormWeight,
             m.kv_a_layernorm);
    v.matrix(a + "kv_b_proj.weight", heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank,
             true, m.kv_b_proj);
    v.matrix(a + "o_proj.weight", H, heads * c.v_head_dim, true, m.o_proj);
    if (c.has_indexer()) {
      const std::string x = a + "indexer.";
      Indexer& idx = m.indexer;
      v.matrix(x + "wq_b.weight", c.index_n_heads * c.index_head_dim, c.q_lora_rank, true,
               idx.wq_b);
      v.matrix(x + "wk.weight", c.index_head_dim, H, true, idx.wk);
      v.vector(x + "k_norm.weight", c.index_head_dim, WeightSpec::kNormWeight, idx.k_norm_weight);
      v.vector(x + "k_norm.bias", c.index_head_dim, WeightSpec::kBias, idx.k_norm_bias);
      v.matrix(x + "weights_proj.weight", c.index_n_heads, H, false, idx.weights_proj);
    }
  } else {
    const std::string a = p + "self_attn.";
    const int hd = c.dense_head_dim();
    const int q_dim = c.num_attention_heads * hd, kv_dim = c.num_key_value_heads * hd;
    DenseAttentionWeights& d = layer.attn;
    v.matrix(a + "q_proj.weight", q_dim, H, false, d.q_proj);
    v.matrix(a + "k_proj.weight", kv_dim, H, false, d.k_proj);
    v.matrix(a + "v_proj.weight", kv_dim, H, false, d.v_proj);
    v.matrix(a + "o_proj.weight", H, q_dim, false, d.o_proj);
    if (c.attention_bias) {
      v.vector(a + "q_proj.bias", q_dim, WeightSpec::kBias, d.q_bias);
      v.vector(a + "k_proj.bias", kv_dim, WeightSpec::kBias, d.k_bias);
      v.vector(a + "v_proj.bias", kv_dim, WeightSpec::kBias, d.v_bias);
      if (c.model_type == "llama") v.vector(a + "o_proj.bias", H, WeightSpec::kBias, d.o_bias);
    }
  }
  layer.is_moe = c.is_moe_layer(index);
  if (layer.is_moe) {
    const std::string m = p + "mlp.";
    v.matrix(m + "gate.weight", c.n_routed_experts, H, false, layer.moe.router.weight);
    if (c.topk_method == "noaux_tc")
      v.vector(m + "gate.e_score_correction_bias", c.n_routed_experts, WeightSpec::kRoutingBias,
               layer.moe.router.e_score_correction_bias);
    layer.moe.experts.resize(c.n_routed_experts);
    for (int e = 0; e < c.n_routed_experts; ++e)
      visit_ffn(m + "experts." + std::to_string(e) + ".", H, c.moe_intermediate_size, false,
                layer.moe.experts[e], v);
    layer.moe.has_shared = c.n_shared_experts > 0;
    if (layer.moe.has_shared)
      visit_ffn(m + "shared_experts.", H, c.moe_intermediate_size * c.n_shared_experts, false,
                layer.moe.shared, v);
  } else {
    visit_ffn(p + "mlp.", H, c.intermediate_size, c.mlp_bias, layer.mlp, v);
  }
}

template <class Visitor>
void visit_weights(const ModelConfig& c, Weights& w, Visitor& v) {
  const int H = c.hidden_size;
  v.matrix("model.embed_tokens.weight", c.vocab_size, H, false, w.embed_tokens);
  w.layers.resize(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) visit_layer(c, i, w.layers[i], v);
  v.vector("model.norm.weight", H, WeightSpec::kNormWeight, w.norm);
  if (!c.tie_word_embeddings) v.matrix("lm_head.weight", c.vocab_size, H, false, w.lm_head);
  w.has_mtp = c.has_mtp();
  if (w.has_mtp) {
    const int L = c.num_hidden_layers;
    const std::string p = "model.layers." + std::to_string(L) + ".";
    MtpWeights& m = w.mtp;
    v.vector(p + "enorm.weight", H, WeightSpec::kNormWeight, m.enorm);
    v.vector(p + "hnorm.weight", H, WeightSpec::kNormWeight, m.hnorm);
    v.matrix(p + "eh_proj.weight", H, 2 * H, false, m.eh_proj);
    v.matrix(p + "embed_tokens.weight", c.vocab_size, H, false, m.embed_tokens);
    v.vector(p + "shared_head.norm.weight", H, WeightSpec::kNormWeight, m.shared_head_norm);
    v.matrix(p + "shared_head.head.weight", c.vocab_size, H, false, m.shared_head_head);
    visit_layer(c, L, m.block, v);
  }
}

struct SpecCollector {
  std::vector<WeightSpec> specs;
  void matrix(const std::string& name, int rows, int cols, bool quantizable, Linear&) {
    specs.push_back({name, {rows, cols}, quantizable, WeightSpec::kMatrix});
  }
  void vector(const std::string& name, int n, WeightSpec::Kind kind, Vector&) {
    specs.push_back({name, {n}, false, kind});
  }
};

struct Loader {
  const ModelConfig& config;
  const TensorSource& checkpoint;

  void matrix(const std::string& name, int rows, int cols, bool quantizable, Linear& out) {
    // whale's q4 packs two values a byte in groups of 32: [rows, ceil(cols / 32) · 16] U8.
    const int64_t groups = (cols + 31) / 32;
    const TensorView& t = checkpoint.get(name).dtype == DType::U8
                              ? checkpoint.get(name, {rows, groups * 16})
                              : checkpoint.get(name, {rows, cols});
    out.rows = rows;
    out.cols = cols;
    out.data = t.data;
    out.dtype = t.dtype;
    if (t.dtype == DType::F8_E4M3) {
      out.block_rows = config.fp8_block_rows;
      out.block_cols = config.fp8_block_cols;
      int64_t br = (rows + out.block_rows - 1) / out.block_rows;
      int64_t bc = (cols + out.block_cols - 1) / out.block_cols;
      const TensorView& s = checkpoint.get(name + "_scale_inv", {br, bc});
      out.block_scale = to_f32(s);
    } else if (t.dtype == DType::I8 || t.dtype == DType::U8) {  // q8 / q4 (io/quantize.h)
      const TensorView& s = t.dtype == DType::I8
                                ? checkpoint.get(name + "_qscale", {rows, groups})
                                : checkpoint.get(name + "_qscale", {rows, groups, 2});
      check(s.dtype == DType::F16 && reinterpret_cast<uintptr_t>(s.data) % 2 == 0,
            s.file + ": tensor '" + s.name + "' must be 2-byte aligned F16");
      out.qscale = reinterpret_cast<const uint16_t*>(s.data);
    } else {
      check(t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16,
            t.file + ": tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                " (whale reads F32, BF16, F16, F8_E4M3, and I8/U8 q8/q4 matrices)");
    }
  }

  void vector(const std::string& name, int n, WeightSpec::Kind, Vector& out) {
    const TensorView& t = checkpoint.get(name, {n});
    if (t.dtype == DType::F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0)
      out.set_view(reinterpret_cast<const float*>(t.data), static_cast<size_t>(n));
    else
      out.set_owned(to_f32(t));
  }

  static std::vector<float> to_f32(const TensorView& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < v.size(); ++i) {
      switch (t.dtype) {
        case DType::F32:
          std::memcpy(&v[i], t.data + 4 * i, 4);
          break;
        case DType::BF16:
        case DType::F16: {
          uint16_t b;
          std::memcpy(&b, t.data + 2 * i, 2);
          v[i] = t.dtype == DType::BF16 ? bf16_to_f32(b) : f16_to_f32(b);
          break;
        }
        case DType::F8_E4M3:
          v[i] = e4m3_to_f32(t.data[i]);
          break;
        default:
          throw Error(t.file + ": tensor '" + t.name + "' has non-float dtype " +
                      dtype_name(t.dtype));
      }
    }
    return v;
  }
};

}  // namespace

Weights load_weights(const ModelConfig& config, const TensorSource& checkpoint) {
  Weights w;
  Loader loader{config, checkpoint};
  visit_weights(config, w, loader);
  if (config.tie_word_embeddings) w.lm_head = w.embed_tokens;
  return w;
}

namespace {
// The load-time copies' pages are laid out in two passes over the weights: first the bytes every
// piece needs (each on a cache line), then, with the pages allocated, the copies at the same
// offsets.
struct PageLayout {
  size_t bytes = 0;
  // Room for n bytes; its offset.
  size_t take(size_t n) {
    const size_t at = bytes;
    bytes += (n + kCacheLine - 1) / kCacheLine * kCacheLine;
    return at;
  }
};

struct LaneReorderer {
  const std::function<void(const void*, size_t)>& done_with;
  uint8_t* storage = nullptr;  // null while sizing
  PageLayout layout;

  // Every q8 and q4 matrix decode multiplies by row dots; not MLA's kv_b_proj, whose rows absorbed
  // attention reads dequantized at every step (each would have to be put back in order first:
  // q8 decode of v2-lite-8l 7% slower).
  static bool reordered(const std::string& name, const Linear& w) {
    return (w.dtype == DType::I8 || w.dtype == DType::U8) && !w.group_lanes &&
           group_lanes_fit(w.cols) && !name.ends_with("kv_b_proj.weight");
  }
  void matrix(const std::string& name, int, int, bool, Linear& w) {
    if (!reordered(name, w)) return;
    // The scales come along, after the codes, onto the same huge pages: on the file mapping's
    // 4 KiB pages q8 decode of v2-lite-8l stepped 1.01–1.04× slower (alternated in one process,
    // session 21), and they no longer depend on the page cache keeping the file.
    const size_t n = static_cast<size_t>(w.rows) * w.row_bytes(), scale_bytes = w.bytes() - n;
    const size_t at = layout.take(n), scales_at = layout.take(scale_bytes);
    if (!storage) return;
    std::memcpy(storage + scales_at, w.qscale, scale_bytes);
    done_with(w.qscale, scale_bytes);
    w.qscale = reinterpret_cast<const uint16_t*>(storage + scales_at);
    const uint8_t* source = w.data;
    uint8_t* lanes = storage + at;
    const size_t row_bytes = w.row_bytes();
    // q8 rows of a few blocks that end in half a block (v2-lite-8l's shared experts' down_proj,
    // 2816 values) as super rows of 2 (ops/group_lanes.h): every block whole. Alternated in one
    // process (pairs of steps of two loaded models), q8 decode 1.022 / 1.022× (median of 20
    // rounds each); also the routed experts' 1408-value rows (super rows of 4) only 1.008× (mean),
    // their rows reading no faster that way from memory (bench/inference/README.md, session 23).
    constexpr int kFewBlocks = 8 * kLaneBlockGroups * 32;  // values in 8 whole blocks
    const int lane_rows =
        w.dtype == DType::I8 && w.cols < kFewBlocks && super_rows(w.cols) == 2 && w.rows % 2 == 0
            ? 2
            : 1;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < w.rows; r += lane_rows) {
      if (w.dtype == DType::I8)
        q8_row_to_lanes(reinterpret_cast<const int8_t*>(source + r * row_bytes), lane_rows * w.cols,
                        reinterpret_cast<int8_t*>(lanes + r * row_bytes));
      else
        q4_row_to_lanes(source + r * row_bytes, w.cols, lanes + r * row_bytes);
    }
    done_with(source, n);
    w.data = storage + at;
    w.group_lanes = true;
    w.super_rows = lane_rows;
  }
  // Absorbed attention's copies of a q8/q4 kv_b_proj (MlaWeights::absorbed_values and
  // absorbed_keys_int8): the W_UV rows back to back in group-lane order, their scales beside them,
  // so that the value projection is the lane row dots; each head's W_UK rows in column blocks
  // (ops/transposed_int8.h), so that the absorption W_UKᵀ q_nope is int8 arithmetic too.
  void absorbed(const ModelConfig& c, MlaWeights& m) {
    const Linear& kv_b = m.kv_b_proj;
    if (!(kv_b.dtype == DType::I8 || kv_b.dtype == DType::U8) || kv_b.group_lanes ||
        !group_lanes_fit(kv_b.cols))
      return;
    absorbed_keys(c, m);
    const int heads = c.num_attention_heads, nope = c.qk_nope_head_dim, vdim = c.v_head_dim;
    const size_t rows = static_cast<size_t>(heads) * vdim, row_bytes = kv_b.row_bytes();
    const size_t scales = (kv_b.dtype == DType::I8 ? 1 : 2) * kv_b.groups();  // f16s a row
    const size_t codes_at = layout.take(rows * row_bytes),
                 scales_at = layout.take(rows * scales * sizeof(uint16_t));
    if (!storage) return;
    uint8_t* codes = storage + codes_at;
    auto* scale_copy = reinterpret_cast<uint16_t*>(storage + scales_at);
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < vdim; ++i) {
        const size_t from = static_cast<size_t>(h) * (nope + vdim) + nope + i,
                     to = static_cast<size_t>(h) * vdim + i;
        if (kv_b.dtype == DType::I8)
          q8_row_to_lanes(reinterpret_cast<const int8_t*>(kv_b.data + from * row_bytes), kv_b.cols,
                          reinterpret_cast<int8_t*>(codes + to * row_bytes));
        else
          q4_row_to_lanes(kv_b.data + from * row_bytes, kv_b.cols, codes + to * row_bytes);
        std::copy_n(kv_b.qscale + from * scales, scales, scale_copy + to * scales);
      }
    Linear v = kv_b;
    v.rows = static_cast<int>(rows);
    v.data = codes;
    v.qscale = scale_copy;
    v.group_lanes = true;
    m.absorbed_values = v;
  }
  void absorbed_keys(const ModelConfig& c, MlaWeights& m) {
    const Linear& kv_b = m.kv_b_proj;
    const int heads = c.num_attention_heads, nope = c.qk_nope_head_dim, vdim = c.v_head_dim;
    if (!transposed_int8_fit(nope, kv_b.cols)) return;
    TransposedInt8 head;
    head.q4 = kv_b.dtype == DType::U8;
    head.rows = nope;
    head.cols = kv_b.cols;
    const size_t codes_at = layout.take(heads * head.code_bytes());
    const size_t scales_at = layout.take(heads * head.scale_count() * sizeof(uint16_t));
    const size_t mins_at = head.q4 ? layout.take(heads * head.scale_count() * sizeof(uint16_t)) : 0;
    if (!storage) return;
    const size_t row_scales = (head.q4 ? 2 : 1) * kv_b.groups();
    m.absorbed_keys_int8.clear();
    for (int h = 0; h < heads; ++h) {
      auto* codes = storage + codes_at + h * head.code_bytes();
      auto* scales = reinterpret_cast<uint16_t*>(storage + scales_at) + h * head.scale_count();
      auto* mins = head.q4 ? reinterpret_cast<uint16_t*>(storage + mins_at) + h * head.scale_count()
                           : nullptr;
      const size_t first_row = static_cast<size_t>(h) * (nope + vdim);
      transpose_int8_rows(head.q4, head.rows, head.cols, kv_b.data + first_row * kv_b.row_bytes(),
                          kv_b.qscale + first_row * row_scales, codes, scales, mins);
      head.codes = codes;
      head.scales = scales;
      head.mins = mins;
      m.absorbed_keys_int8.push_back(head);
    }
  }
  void vector(const std::string&, int, WeightSpec::Kind, Vector&) {}
};

// Every MLA block's weights: each layer's, then the MTP block's.
template <class Fn>
void for_each_mla(const ModelConfig& config, Weights& w, Fn&& fn) {
  if (!config.is_deepseek()) return;
  for (Layer& layer : w.layers) fn(layer.mla);
  if (w.has_mtp) fn(w.mtp.block.mla);
}
}  // namespace

void put_rows_in_group_lanes(const ModelConfig& config, Weights& w, PageBuffer* storage,
                             const std::function<void(const void*, size_t)>& done_with) {
  // Only where the reordered kernels will run: on the exact path every row would have to be put
  // back in order before each product.
  if (!use_vnni()) return;
  LaneReorderer reorderer{done_with, nullptr, {}};
  const auto visit = [&] {
    visit_weights(config, w, reorderer);
    for_each_mla(config, w, [&](MlaWeights& m) { reorderer.absorbed(config, m); });
  };
  visit();
  if (reorderer.layout.bytes == 0) return;
  *storage = PageBuffer(reorderer.layout.bytes);
  reorderer.storage = storage->data();
  reorderer.layout = {};
  visit();
  if (config.tie_word_embeddings) w.lm_head = w.embed_tokens;
}

namespace {
// Two passes like LaneReorderer's; exceptions are collected while packing (their number is known
// only then).
struct Bf16Packer {
  const std::function<void(const void*, size_t)>& done_with;
  PackedBf16Storage* storage = nullptr;
  bool sizing = true;
  PageLayout layout;

  static bool packed(const std::string& name, const Linear& w) {
    return w.dtype == DType::BF16 && !w.bf16_packed() && packed_bf16_fit(w.cols) &&
           !name.ends_with("kv_b_proj.weight") && name.find("embed_tokens") == std::string::npos;
  }
  void matrix(const std::string& name, int, int, bool, Linear& w) {
    if (packed(name, w)) pack(w, true);
  }
  // Absorbed attention's copies of a bf16 kv_b_proj (MlaWeights::absorbed_keys and
  // absorbed_values), built here and packed like the rest; left empty where they do not pack.
  void absorbed(const ModelConfig& c, MlaWeights& m) {
    const Linear& kv_b = m.kv_b_proj;
    const int heads = c.num_attention_heads, nope = c.qk_nope_head_dim, vdim = c.v_head_dim;
    const int kvr = c.kv_lora_rank, per_head = nope + vdim;
    if (kv_b.dtype != DType::BF16 || kv_b.bf16_packed() || !packed_bf16_fit(nope) ||
        !packed_bf16_fit(kvr))
      return;
    std::vector<uint16_t> keys, values;
    if (!sizing) {
      const auto* source = reinterpret_cast<const uint16_t*>(kv_b.data);
      keys.resize(static_cast<size_t>(heads) * kvr * nope);
      values.resize(static_cast<size_t>(heads) * vdim * kvr);
      for (int h = 0; h < heads; ++h) {
        const uint16_t* head = source + static_cast<size_t>(h) * per_head * kvr;
        for (int i = 0; i < nope; ++i)  // W_UK's row i of the head, as column i of its copy
          for (int k = 0; k < kvr; ++k)
            keys[(static_cast<size_t>(h) * kvr + k) * nope + i] =
                head[static_cast<size_t>(i) * kvr + k];
        std::copy_n(head + static_cast<size_t>(nope) * kvr, static_cast<size_t>(vdim) * kvr,
                    values.data() + static_cast<size_t>(h) * vdim * kvr);
      }
    }
    Linear k, v;
    k.dtype = v.dtype = DType::BF16;
    k.rows = heads * kvr;
    k.cols = nope;
    k.data = reinterpret_cast<const uint8_t*>(keys.data());
    v.rows = heads * vdim;
    v.cols = kvr;
    v.data = reinterpret_cast<const uint8_t*>(values.data());
    pack(k, false);
    pack(v, false);
    if (sizing) return;
    // Both or neither (the sources go out of scope here).
    if (!k.bf16_packed() || !v.bf16_packed()) return;
    m.absorbed_keys = k;
    m.absorbed_values = v;
  }
  // Packs w's rows into the storage and points w there; its source is the checkpoint's
  // (done_with is told of it) or a buffer of the caller's.
  void pack(Linear& w, bool from_checkpoint) {
    const int rows = w.rows, cols = w.cols, segments = packed_bf16_segments(cols);
    const size_t row_bytes = packed_bf16_row_bytes(cols);
    const size_t planes_at = layout.take(rows * row_bytes),
                 bases_at = layout.take(size_t{1} * rows * segments),
                 offsets_at = layout.take((rows + size_t{1}) * sizeof(uint32_t));
    if (sizing) return;
    uint8_t* base = storage->pages.data();
    uint8_t* planes = base + planes_at;
    uint8_t* bases = base + bases_at;
    auto* offsets = reinterpret_cast<uint32_t*>(base + offsets_at);
    const auto* source = reinterpret_cast<const uint16_t*>(w.data);
    // Each thread a contiguous range of rows, its exceptions in its own list; then joined in
    // row order.
    const int team = omp_get_max_threads();
    std::vector<std::vector<PackedException>> parts(team);
#pragma omp parallel num_threads(team)
    {
      const int id = omp_get_thread_num(), n = omp_get_num_threads();
      const int r0 = static_cast<int>(static_cast<long>(rows) * id / n),
                r1 = static_cast<int>(static_cast<long>(rows) * (id + 1) / n);
      for (int r = r0; r < r1; ++r)
        offsets[r + 1] = static_cast<uint32_t>(
            pack_bf16_row(source + static_cast<size_t>(r) * cols, cols, planes + r * row_bytes,
                          bases + static_cast<size_t>(r) * segments, &parts[id]));
    }
    std::vector<PackedException> exceptions;
    for (auto& part : parts) exceptions.insert(exceptions.end(), part.begin(), part.end());
    // Mostly exceptions (zeros do not count): not worth it; the room stays unused.
    if (exceptions.size() > static_cast<size_t>(rows) * cols / 100) return;
    offsets[0] = 0;
    for (int r = 0; r < rows; ++r) offsets[r + 1] += offsets[r];
    if (from_checkpoint) done_with(w.data, static_cast<size_t>(rows) * cols * 2);
    storage->exceptions.push_back(std::move(exceptions));
    w.data = planes;
    w.packed = {planes, bases, offsets, storage->exceptions.back().data()};
  }
  void vector(const std::string&, int, WeightSpec::Kind, Vector&) {}
};
}  // namespace

void pack_bf16_rows(const ModelConfig& config, Weights& w, PackedBf16Storage* storage,
                    const std::function<void(const void*, size_t)>& done_with) {
  if (!use_bf16_gemm()) return;
  Bf16Packer packer{done_with, storage, true, {}};
  const auto visit = [&] {
    visit_weights(config, w, packer);
    for_each_mla(config, w, [&](MlaWeights& m) { packer.absorbed(config, m); });
  };
  visit();
  if (packer.layout.bytes == 0) return;
  storage->pages = PageBuffer(packer.layout.bytes);
  packer.sizing = false;
  packer.layout = {};
  visit();
  if (config.tie_word_embeddings) w.lm_head = w.embed_tokens;
}

namespace {
struct PageToucher {
  long sum = 0;
  void touch(const void* p, size_t n) {
    const auto* bytes = static_cast<const uint8_t*>(p);
    for (size_t b = 0; b < n; b += 4096) sum += bytes[b];
  }
  void matrix(const std::string&, int, int, bool, Linear& w) {
    if (w.empty()) return;
    touch(w.data, static_cast<size_t>(w.rows) * w.row_bytes());
    if (w.qscale) touch(w.qscale, (w.bytes() - static_cast<size_t>(w.rows) * w.row_bytes()));
    if (w.bf16_packed()) {
      touch(w.packed.bases, static_cast<size_t>(w.rows) * packed_bf16_segments(w.cols));
      touch(w.packed.offsets, (w.rows + size_t{1}) * sizeof(uint32_t));
      if (const size_t n = w.packed.exception_count(w.rows))
        touch(w.packed.exceptions, n * sizeof(PackedException));
    }
  }
  void vector(const std::string&, int, WeightSpec::Kind, Vector& v) {
    touch(v.data(), v.size() * sizeof(float));
  }
};
}  // namespace

long touch_weight_pages(const ModelConfig& config, const Weights& w) {
  PageToucher toucher;
  // The visitor hands out mutable slots; nothing is written.
  visit_weights(config, const_cast<Weights&>(w), toucher);
  return toucher.sum;
}

std::vector<WeightSpec> weight_specs(const ModelConfig& config) {
  Weights scratch;
  SpecCollector collector;
  visit_weights(config, scratch, collector);
  return collector.specs;
}

size_t ffn_bytes(const FeedForward& f) {
  return f.gate_proj.bytes() + f.up_proj.bytes() + f.down_proj.bytes();
}

std::vector<const Linear*> attention_matrices(const Layer& l) {
  const MlaWeights& m = l.mla;
  const DenseAttentionWeights& a = l.attn;
  std::vector<const Linear*> out;
  // kv_b_proj as decode reads it: its copies where they exist (beside a lone W_UV copy,
  // attention_bytes_unread leaves out kv_b_proj's W_UV rows).
  const bool keys = !m.absorbed_keys.empty();
  for (const Linear* w :
       {&m.q_proj, &m.q_a_proj, &m.q_b_proj, &m.kv_a_proj_with_mqa,
        keys ? &m.absorbed_keys : &m.kv_b_proj, &m.absorbed_values, &m.o_proj, &m.indexer.wq_b,
        &m.indexer.wk, &m.indexer.weights_proj, &a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj})
    if (w && !w->empty()) out.push_back(w);
  return out;
}

namespace {
// Bytes of the matrices attention_matrices lists that decode does not read: beside a lone W_UV
// copy (q8, q4), kv_b_proj's W_UV rows (decode reads only its W_UK rows, or W_UK's int8 copies
// in their place: the same codes and scales, as many bytes).
size_t attention_bytes_unread(const Layer& l) {
  const MlaWeights& m = l.mla;
  if (!m.absorbed_keys.empty() || m.absorbed_values.empty()) return 0;
  return m.kv_b_proj.bytes() / m.kv_b_proj.rows * m.absorbed_values.rows;
}
}  // namespace

size_t attention_bytes(const Layer& l) {
  size_t b = 0;
  for (const Linear* w : attention_matrices(l)) b += w->bytes();
  return b - attention_bytes_unread(l);
}

std::vector<const Linear*> decode_fixed_matrices(const Weights& w) {
  std::vector<const Linear*> out = {&w.lm_head};
  for (const Layer& l : w.layers) {
    for (const Linear* m : attention_matrices(l)) out.push_back(m);
    const FeedForward* ffn = nullptr;
    if (l.is_moe) {
      out.push_back(&l.moe.router.weight);
      if (l.moe.has_shared) ffn = &l.moe.shared;
    } else {
      ffn = &l.mlp;
    }
    if (ffn) out.insert(out.end(), {&ffn->gate_proj, &ffn->up_proj, &ffn->down_proj});
  }
  return out;
}

size_t decode_fixed_bytes(const Weights& w) {
  size_t fixed = w.embed_tokens.row_bytes();
  for (const Linear* m : decode_fixed_matrices(w)) fixed += m->bytes();
  for (const Layer& l : w.layers) fixed -= attention_bytes_unread(l);
  return fixed;
}

}  // namespace whale
