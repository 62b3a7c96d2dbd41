// The weights of every architecture whale runs, by Hugging Face tensor name, as views into the
// memory-mapped checkpoint (small vectors — norms, biases, routing bias — are copied to f32).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/page_buffer.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "ops/linear.h"
#include "ops/transposed_int8.h"

namespace whale {

// A 1-D f32 parameter (norm weight, bias): a view of f32 storage when the source holds it as
// f32 (training's parameter store), otherwise its own converted copy (bf16 checkpoints).
class Vector {
 public:
  Vector() = default;
  Vector(const Vector& o) { *this = o; }
  Vector& operator=(const Vector& o) {
    owned_ = o.owned_;
    view_ = o.owned_.empty() ? o.view_ : owned_.data();
    size_ = o.size_;
    return *this;
  }
  void set_view(const float* data, size_t n) {
    owned_.clear();
    view_ = data;
    size_ = n;
  }
  void set_owned(std::vector<float> values) {
    owned_ = std::move(values);
    view_ = owned_.data();
    size_ = owned_.size();
  }
  const float* data() const { return view_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  float operator[](size_t i) const { return view_[i]; }

 private:
  std::vector<float> owned_;
  const float* view_ = nullptr;
  size_t size_ = 0;
};

struct FeedForward {  // SwiGLU: down(silu(gate(x)) · up(x))
  Linear gate_proj, up_proj, down_proj;
  Vector gate_bias, up_bias, down_bias;  // Llama's mlp_bias only
};

struct Router {                    // DeepSeekMoE gate
  Linear weight;                   // [n_routed, hidden]
  Vector e_score_correction_bias;  // V3: chooses experts, never weighs them
};

struct Moe {
  Router router;
  std::vector<FeedForward> experts;
  FeedForward shared;  // all shared experts as one FFN of width n_shared · moe_intermediate
  bool has_shared = false;
};

struct Indexer {  // V3.2 lightning indexer
  Linear wq_b, wk, weights_proj;
  Vector k_norm_weight, k_norm_bias;
};

struct MlaWeights {
  Linear q_proj;              // without q-LoRA
  Linear q_a_proj, q_b_proj;  // with q-LoRA
  Vector q_a_layernorm;
  Linear kv_a_proj_with_mqa, kv_b_proj, o_proj;
  Vector kv_a_layernorm;
  // Absorbed attention's reads of kv_b_proj as fast row dots, copies the loader makes (empty
  // otherwise). absorbed_keys: each head's W_UK transposed, [heads · kv_lora_rank, qk_nope] —
  // the absorption W_UKᵀ q_nope as row dots — packed bf16 (pack_bf16_rows, from a bf16
  // kv_b_proj). absorbed_values: the heads' W_UV rows back to back, [heads · v_head_dim,
  // kv_lora_rank], packed bf16 likewise, or from a q8/q4 kv_b_proj in group-lane order
  // (put_rows_in_group_lanes). absorbed_keys_int8: from a q8/q4 kv_b_proj, each head's W_UK
  // [qk_nope, kv_lora_rank] laid out for the product by its transpose (ops/transposed_int8.h):
  // the same codes and scales, so that the absorption is int8 arithmetic too.
  Linear absorbed_keys, absorbed_values;
  std::vector<TransposedInt8> absorbed_keys_int8;  // one per head
  Indexer indexer;
};

struct DenseAttentionWeights {  // Qwen2 / Llama grouped-query attention
  Linear q_proj, k_proj, v_proj, o_proj;
  Vector q_bias, k_bias, v_bias, o_bias;
};

struct Layer {
  Vector input_layernorm, post_attention_layernorm;
  MlaWeights mla;
  DenseAttentionWeights attn;
  bool is_moe = false;
  FeedForward mlp;
  Moe moe;
};

struct MtpWeights {  // DeepSeek-V3 multi-token prediction module (D = 1)
  Vector enorm, hnorm, shared_head_norm;
  Linear eh_proj, embed_tokens, shared_head_head;
  Layer block;
};

struct Weights {
  Linear embed_tokens;  // rows are the embeddings
  std::vector<Layer> layers;
  Vector norm;
  Linear lm_head;  // = embed_tokens when tied
  bool has_mtp = false;
  MtpWeights mtp;
};

// Loads every tensor the config implies, checking each shape; an absent or misshapen tensor
// is an Error naming it. The source (a checkpoint, or training's parameter store) must outlive
// the weights: matrices are always views, f32 vectors too.
Weights load_weights(const ModelConfig& config, const TensorSource& source);

// On CPUs with AVX512-VNNI (and not --exact: ops/precision.h's use_vnni()), every q8 and q4
// matrix whose rows fit (ops/group_lanes.h) copied into
// storage with its rows in decode's group-lane order, its scales after it (on huge pages where the
// system allows), its Linear pointed there. done_with is told of each source range the weights no
// longer read (Model::load drops those pages of the mapped file from memory). storage must outlive
// the weights.
void put_rows_in_group_lanes(const ModelConfig& config, Weights& w, PageBuffer* storage,
                             const std::function<void(const void*, size_t)>& done_with);

// What pack_bf16_rows writes: every packed matrix's planes, segment bases and exception offsets
// in pages (huge where the system allows), and its exceptions.
struct PackedBf16Storage {
  PageBuffer pages;
  std::vector<std::vector<PackedException>> exceptions;  // one list per packed matrix
};

// On CPUs with AVX512-BF16 (and not --exact: ops/precision.h's use_bf16_gemm()), every bf16
// matrix decode multiplies by row dots whose rows fit (packed_bf16_fit) packed losslessly into
// storage, 12 bits a value (ops/packed_bf16.h), its Linear pointed there — not the embeddings (a
// row lookup), nor MLA's kv_b_proj (the naive path's GEMM reads it as stored; for absorbed
// attention the packed copies MlaWeights::absorbed_keys and absorbed_values are built from it),
// nor a matrix where more than 1% of the values would be exceptions. done_with as above.
void pack_bf16_rows(const ModelConfig& config, Weights& w, PackedBf16Storage* storage,
                    const std::function<void(const void*, size_t)>& done_with);

// Reads a byte of every 4 KiB page of the memory the weights point to (matrices, their scales,
// vectors): afterwards a benchmark's timings meet no page faults. Returns their sum (to keep the
// reads).
long touch_weight_pages(const ModelConfig& config, const Weights& w);

// Every tensor name and shape the config implies, in a stable order, with whether it is a
// matrix that fp8 checkpoints store quantized (then a `_scale_inv` companion exists).
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool quantizable;  // a Linear that fp8 checkpoints store as e4m3 + weight_scale_inv
  enum Kind { kMatrix, kNormWeight, kBias, kRoutingBias } kind;
};
std::vector<WeightSpec> weight_specs(const ModelConfig& config);

// Bytes a decode step reads: one FFN's three matrices; one layer's attention matrices (MLA with
// V3.2's indexer, or dense attention); everything a step reads whatever the routing (the
// embedding row, attention, router gates, shared experts and dense FFNs, the head) — the routed
// experts chosen come on top, ffn_bytes each.
size_t ffn_bytes(const FeedForward& f);
size_t attention_bytes(const Layer& l);
// The matrices behind those figures: a layer's attention (MLA with V3.2's indexer, or dense
// grouped-query attention), and every step's — the head, each layer's attention, its router and
// shared expert or its dense FFN.
std::vector<const Linear*> attention_matrices(const Layer& l);
std::vector<const Linear*> decode_fixed_matrices(const Weights& w);
size_t decode_fixed_bytes(const Weights& w);

}  // namespace whale
