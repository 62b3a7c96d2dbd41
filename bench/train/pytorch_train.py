#!/usr/bin/env python3
"""PyTorch eager baseline for whale's training benchmark (bench/train/run.sh).

A batched, float32 PyTorch implementation of the DeepSeek-V3 architecture in the style of
Hugging Face's modeling_deepseek_v3.py (one nn.Module per layer, MLA in its naive form,
MoE that loops over the experts and index-selects their tokens, shared experts, MTP),
trained on the same objective as `whale train`:

    loss = CE_main + λ·CE_mtp + α·BAL

with torch.optim.AdamW (β = (0.9, 0.95), eps 1e-8, weight decay on 2-D weights only),
global gradient clipping, and after each step the auxiliary-loss-free routing-bias update
b += γ·sign(mean_load − load). Batches are random windows of DIR/train.bin, drawn with
the same formula as whale's sample_batch (same --seed gives the same batches).

    # train N steps, print per-step loss and tokens/s (first step = warm-up, not counted)
    /usr/bin/python3 bench/train/pytorch_train.py --data DIR --model MODEL --steps 10 \\
        --batch 8 --seq-len 128 --threads 2

    # loss (and optionally gradients) at the initial weights for one fixed batch, to
    # compare with `whale grad --model MODEL --tokens ... --mtp-weight 0.3 --balance-alpha 1e-4`
    /usr/bin/python3 bench/train/pytorch_train.py --model MODEL --check tokens.json \\
        [--compare-grads /tmp/g.safetensors]

Only torch (Debian's python3-torch 1.13) and numpy are needed.
"""
import argparse
import json
import math
import os
import struct
import sys
import time


def _early_option(argv, name, default):
    """Options that must be known before torch (and its BLAS) is loaded."""
    value = default
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


_THREADS = int(_early_option(sys.argv[1:], "--threads", "2"))
# Debian's torch calls BLAS through libblas.so.3, which the system's alternatives point at
# OpenBLAS' *pthread* build by default: its worker threads spin next to torch's OpenMP
# threads and, on a 2-core machine, make training several times slower. whale links
# OpenBLAS' OpenMP build (one thread pool shared with its own loops); with --blas openmp
# (the default) this script re-executes itself with that same library first on the
# library path, so both engines run the same GEMM code on the same threads.
OPENMP_BLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
_BLAS = _early_option(sys.argv[1:], "--blas", "openmp")
if (_BLAS == "openmp" and os.path.exists(os.path.join(OPENMP_BLAS_DIR, "libblas.so.3"))
        and not os.environ.get("WHALE_BENCH_REEXEC")):
    _env = dict(os.environ, WHALE_BENCH_REEXEC="1")
    _env["LD_LIBRARY_PATH"] = OPENMP_BLAS_DIR + (":" + _env["LD_LIBRARY_PATH"] if _env.get("LD_LIBRARY_PATH") else "")
    os.execve(sys.executable, [sys.executable] + sys.argv, _env)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(_THREADS))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ----------------------------------------------------------------------------
# safetensors: u64 little-endian header size N, N bytes of JSON, then raw data.

_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}


def loaded_blas():
    """Path of the OpenBLAS (or other BLAS) library this process has mapped."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.split()[-1]}
    except OSError:
        return "unknown"
    return ", ".join(sorted(os.path.realpath(p) for p in libs if "openblas" in p) or sorted(libs)) or "none"


def read_safetensors(path):
    """Returns (tensors {name: float32/... torch.Tensor}, metadata dict)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    meta = header.pop("__metadata__", {}) or {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise SystemExit("%s: tensor %s has unsupported dtype %s (use an f32/bf16/f16 model)"
                             % (path, name, dt))
        raw = np.frombuffer(data, dtype=_ST_DTYPES[dt], count=(e - b) // np.dtype(_ST_DTYPES[dt]).itemsize,
                            offset=b)
        if dt == "BF16":
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        elif dt == "F16":
            arr = raw.astype(np.float32)
        else:
            arr = raw.copy()
        out[name] = torch.from_numpy(np.ascontiguousarray(arr)).reshape(info["shape"])
    return out, meta


def load_checkpoint(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for fn in files:
        tensors.update(read_safetensors(os.path.join(model_dir, fn))[0])
    return tensors


# ----------------------------------------------------------------------------
# Model (after transformers' models/deepseek_v3/modeling_deepseek_v3.py)

class DeepseekV3RMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def yarn_get_mscale(scale=1.0, mscale=1.0):
    return 0.1 * mscale * math.log(scale) + 1.0 if scale > 1 else 1.0


def _yarn_find_correction_dim(num_rotations, dim, base, max_pos):
    return (dim * math.log(max_pos / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


class DeepseekV3RotaryEmbedding(nn.Module):
    """cos/sin tables [T, dim] (frequencies repeated twice, rotate_half layout), with YaRN
    when config.rope_scaling says so."""

    def __init__(self, config):
        super().__init__()
        dim, base = config["qk_rope_head_dim"], config["rope_theta"]
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        self.attention_scaling = 1.0
        rs = config.get("rope_scaling")
        if rs is not None:
            kind = rs.get("type", rs.get("rope_type"))
            if kind != "yarn":
                raise SystemExit("unsupported rope_scaling type %r" % kind)
            factor = rs["factor"]
            orig = rs["original_max_position_embeddings"]
            low = math.floor(_yarn_find_correction_dim(rs.get("beta_fast", 32), dim, base, orig))
            high = math.ceil(_yarn_find_correction_dim(rs.get("beta_slow", 1), dim, base, orig))
            low, high = max(low, 0), min(high, dim - 1)
            if low == high:
                high += 0.001
            ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
            extrapolation = 1.0 - ramp
            inv_freq = inv_freq / factor * (1 - extrapolation) + inv_freq * extrapolation
            self.attention_scaling = (yarn_get_mscale(factor, rs.get("mscale", 1))
                                      / yarn_get_mscale(factor, rs.get("mscale_all_dim", 0)))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len, dtype):
        t = torch.arange(seq_len, dtype=torch.float64)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return ((emb.cos() * self.attention_scaling).to(dtype),
                (emb.sin() * self.attention_scaling).to(dtype))


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb_interleave(q, k, cos, sin):
    """DeepSeek's weights rotate interleaved pairs (x[2i], x[2i+1]). As in transformers,
    de-interleave q and k the same way (dot products are unchanged), then rotate_half."""
    b, h, s, d = q.shape
    q = q.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
    b, h, s, d = k.shape
    k = k.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


class DeepseekV3MLP(nn.Module):
    def __init__(self, hidden_size, intermediate_size):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DeepseekV3TopkRouter(nn.Module):
    """Sigmoid scores; the bias only chooses (group-limited: a group's score is the sum of its
    two best biased scores); gates are the unbiased scores of the chosen experts, normalized,
    times routed_scaling_factor. Returns (topk_indices, topk_weights, scores)."""

    def __init__(self, config):
        super().__init__()
        self.top_k = config["num_experts_per_tok"]
        self.n_routed_experts = config["n_routed_experts"]
        self.routed_scaling_factor = config["routed_scaling_factor"]
        self.n_group = config["n_group"] if config["topk_method"] == "noaux_tc" else 1
        self.topk_group = config["topk_group"]
        self.norm_topk_prob = config["norm_topk_prob"]
        if config["scoring_func"] != "sigmoid" or config["topk_method"] != "noaux_tc":
            raise SystemExit("only DeepSeek-V3 routing (sigmoid, noaux_tc) is implemented")
        self.weight = nn.Parameter(torch.empty(self.n_routed_experts, config["hidden_size"]))
        self.register_buffer("e_score_correction_bias", torch.zeros(self.n_routed_experts))

    @torch.no_grad()
    def get_topk_indices(self, scores):
        choice = scores + self.e_score_correction_bias.unsqueeze(0)
        if self.n_group > 1:
            group_scores = (choice.view(-1, self.n_group, self.n_routed_experts // self.n_group)
                            .topk(2, dim=-1)[0].sum(dim=-1))
            group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
            group_mask = torch.zeros_like(group_scores)
            group_mask.scatter_(1, group_idx, 1)
            score_mask = (group_mask.unsqueeze(-1)
                          .expand(-1, self.n_group, self.n_routed_experts // self.n_group)
                          .reshape(-1, self.n_routed_experts))
            # dropped groups get -inf (HF's remote code uses 0.0, which only differs when a
            # chosen biased score is negative)
            choice = choice.masked_fill(~score_mask.bool(), float("-inf"))
        return torch.topk(choice, k=self.top_k, dim=-1, sorted=False)[1]

    def forward(self, hidden_states):
        hidden_states = hidden_states.view(-1, hidden_states.shape[-1])
        router_logits = F.linear(hidden_states, self.weight)
        scores = router_logits.sigmoid()
        topk_indices = self.get_topk_indices(scores)
        topk_weights = scores.gather(1, topk_indices)
        if self.norm_topk_prob:
            topk_weights = topk_weights / (topk_weights.sum(dim=-1, keepdim=True) + 1e-20)
        topk_weights = topk_weights * self.routed_scaling_factor
        return topk_indices, topk_weights, scores


class DeepseekV3MoE(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.experts = nn.ModuleList(
            [DeepseekV3MLP(config["hidden_size"], config["moe_intermediate_size"])
             for _ in range(config["n_routed_experts"])])
        self.gate = DeepseekV3TopkRouter(config)
        self.shared_experts = None
        if config.get("n_shared_experts"):
            self.shared_experts = DeepseekV3MLP(
                config["hidden_size"], config["moe_intermediate_size"] * config["n_shared_experts"])

    def moe(self, hidden_states, topk_indices, topk_weights):
        final_hidden_states = torch.zeros_like(hidden_states)
        expert_mask = F.one_hot(topk_indices, num_classes=len(self.experts)).permute(2, 0, 1)
        for expert_idx, expert in enumerate(self.experts):
            token_indices, weight_indices = torch.where(expert_mask[expert_idx])
            if token_indices.numel() > 0:
                expert_weights = topk_weights[token_indices, weight_indices]
                expert_output = expert(hidden_states[token_indices])
                final_hidden_states.index_add_(0, token_indices, expert_output * expert_weights.unsqueeze(-1))
        return final_hidden_states

    def forward(self, hidden_states):
        residuals = hidden_states
        orig_shape = hidden_states.shape
        topk_indices, topk_weights, scores = self.gate(hidden_states)
        hidden_states = self.moe(hidden_states.view(-1, orig_shape[-1]), topk_indices, topk_weights)
        hidden_states = hidden_states.view(*orig_shape)
        if self.shared_experts is not None:
            hidden_states = hidden_states + self.shared_experts(residuals)
        return hidden_states, (scores, topk_indices)


class DeepseekV3Attention(nn.Module):
    """Multi-head latent attention, naive (non-absorbed) form."""

    def __init__(self, config):
        super().__init__()
        D = config["hidden_size"]
        self.num_heads = config["num_attention_heads"]
        self.q_lora_rank = config.get("q_lora_rank")
        self.kv_lora_rank = config["kv_lora_rank"]
        self.qk_nope_head_dim = config["qk_nope_head_dim"]
        self.qk_rope_head_dim = config["qk_rope_head_dim"]
        self.v_head_dim = config["v_head_dim"]
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        eps = config["rms_norm_eps"]
        if self.q_lora_rank is None:
            self.q_proj = nn.Linear(D, self.num_heads * self.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(D, self.q_lora_rank, bias=False)
            self.q_a_layernorm = DeepseekV3RMSNorm(self.q_lora_rank, eps)
            self.q_b_proj = nn.Linear(self.q_lora_rank, self.num_heads * self.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = DeepseekV3RMSNorm(self.kv_lora_rank, eps)
        self.kv_b_proj = nn.Linear(self.kv_lora_rank, self.num_heads * (self.qk_nope_head_dim + self.v_head_dim),
                                   bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.v_head_dim, D, bias=False)
        self.scaling = self.qk_head_dim ** -0.5
        rs = config.get("rope_scaling")
        if rs is not None:
            m = yarn_get_mscale(rs["factor"], rs.get("mscale_all_dim", 0))
            self.scaling = self.scaling * m * m

    def forward(self, hidden_states, position_embeddings, attention_mask):
        bsz, seq_len = hidden_states.shape[:2]
        if self.q_lora_rank is None:
            q_states = self.q_proj(hidden_states)
        else:
            q_states = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden_states)))
        q_states = q_states.view(bsz, seq_len, self.num_heads, self.qk_head_dim).transpose(1, 2)
        q_pass, q_rot = torch.split(q_states, [self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)

        compressed_kv = self.kv_a_proj_with_mqa(hidden_states)
        k_pass, k_rot = torch.split(compressed_kv, [self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        k_pass = self.kv_b_proj(self.kv_a_layernorm(k_pass))
        k_pass = k_pass.view(bsz, seq_len, self.num_heads, self.qk_nope_head_dim + self.v_head_dim).transpose(1, 2)
        k_pass, value_states = torch.split(k_pass, [self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        k_rot = k_rot.view(bsz, 1, seq_len, self.qk_rope_head_dim)

        cos, sin = position_embeddings
        q_rot, k_rot = apply_rotary_pos_emb_interleave(q_rot, k_rot, cos, sin)
        k_rot = k_rot.expand(*k_pass.shape[:-1], -1)

        query_states = torch.cat((q_pass, q_rot), dim=-1)
        key_states = torch.cat((k_pass, k_rot), dim=-1)

        # eager attention: [B, H, T, T] scores, causal mask, softmax, weighted values
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling
        attn_weights = attn_weights + attention_mask
        attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)
        attn_output = attn_output.transpose(1, 2).reshape(bsz, seq_len, -1)
        return self.o_proj(attn_output)


def is_moe_layer(config, idx):
    return (config.get("n_routed_experts") is not None and idx >= config["first_k_dense_replace"]
            and idx % config.get("moe_layer_freq", 1) == 0)


class DeepseekV3DecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        D, eps = config["hidden_size"], config["rms_norm_eps"]
        self.self_attn = DeepseekV3Attention(config)
        self.is_moe = is_moe_layer(config, layer_idx)
        self.mlp = DeepseekV3MoE(config) if self.is_moe else DeepseekV3MLP(D, config["intermediate_size"])
        self.input_layernorm = DeepseekV3RMSNorm(D, eps)
        self.post_attention_layernorm = DeepseekV3RMSNorm(D, eps)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask)
        hidden_states = residual + hidden_states
        residual = hidden_states
        routing = None
        if self.is_moe:
            hidden_states, routing = self.mlp(self.post_attention_layernorm(hidden_states))
        else:
            hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states, routing


class SharedHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm = DeepseekV3RMSNorm(config["hidden_size"], config["rms_norm_eps"])
        self.head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)

    def forward(self, x):
        return self.head(self.norm(x))


class DeepseekV3MTPLayer(DeepseekV3DecoderLayer):
    """Multi-token prediction module (D = 1), stored as model.layers.<num_hidden_layers>:
    x = eh_proj([enorm(Emb(t_{i+1})) ; hnorm(h_i)]), one decoder block, shared_head."""

    def __init__(self, config, layer_idx):
        super().__init__(config, layer_idx)
        D, eps = config["hidden_size"], config["rms_norm_eps"]
        self.embed_tokens = nn.Embedding(config["vocab_size"], D)
        self.enorm = DeepseekV3RMSNorm(D, eps)
        self.hnorm = DeepseekV3RMSNorm(D, eps)
        self.eh_proj = nn.Linear(2 * D, D, bias=False)
        self.shared_head = SharedHead(config)

    def forward(self, next_tokens, main_hidden, position_embeddings, attention_mask):
        x = self.eh_proj(torch.cat([self.enorm(self.embed_tokens(next_tokens)), self.hnorm(main_hidden)], dim=-1))
        x, routing = super().forward(x, position_embeddings, attention_mask)
        return self.shared_head(x), routing


class DeepseekV3Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        L = config["num_hidden_layers"]
        self.embed_tokens = nn.Embedding(config["vocab_size"], config["hidden_size"])
        layers = [DeepseekV3DecoderLayer(config, i) for i in range(L)]
        if config.get("num_nextn_predict_layers", 0) > 0:
            if config["num_nextn_predict_layers"] != 1:
                raise SystemExit("only num_nextn_predict_layers = 1 is implemented")
            layers.append(DeepseekV3MTPLayer(config, L))
        self.layers = nn.ModuleList(layers)
        self.norm = DeepseekV3RMSNorm(config["hidden_size"], config["rms_norm_eps"])
        self.rotary_emb = DeepseekV3RotaryEmbedding(config)


def causal_mask(T, dtype):
    return torch.full((T, T), float("-inf"), dtype=dtype).triu(1)


class DeepseekV3ForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.get("tie_word_embeddings"):
            raise SystemExit("tied embeddings are not implemented (DeepSeek-V3 unties them)")
        self.config = config
        self.model = DeepseekV3Model(config)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)
        self.num_hidden_layers = config["num_hidden_layers"]
        self.has_mtp = len(self.model.layers) > self.num_hidden_layers

    def forward(self, input_ids, with_mtp=True):
        """input_ids [B, T]. Returns (logits [B, T, V], mtp_logits [B, T-1, V] or None,
        routings [(layer index, scores [B*T', E], topk_indices [B*T', K])])."""
        m = self.model
        B, T = input_ids.shape
        hidden_states = m.embed_tokens(input_ids)
        cos, sin = m.rotary_emb(T, hidden_states.dtype)
        mask = causal_mask(T, hidden_states.dtype)
        routings = []
        for i in range(self.num_hidden_layers):
            hidden_states, routing = m.layers[i](hidden_states, (cos, sin), mask)
            if routing is not None:
                routings.append((i, ) + routing)
        hidden_states = m.norm(hidden_states)
        logits = self.lm_head(hidden_states)
        mtp_logits = None
        if with_mtp and self.has_mtp and T >= 2:
            mtp = m.layers[self.num_hidden_layers]
            mtp_logits, routing = mtp(input_ids[:, 1:], hidden_states[:, :-1], (cos[:T - 1], sin[:T - 1]),
                                      mask[:T - 1, :T - 1])
            if routing is not None:
                routings.append((self.num_hidden_layers, ) + routing)
        return logits, mtp_logits, routings


def build_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    if not config["model_type"].startswith("deepseek"):
        raise SystemExit("%s: model_type %s is not DeepSeek" % (model_dir, config["model_type"]))
    if config.get("quantization_config"):
        raise SystemExit("%s: fp8 checkpoints are not supported here; use `whale init --dtype f32`" % model_dir)
    model = DeepseekV3ForCausalLM(config)
    tensors = load_checkpoint(model_dir)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise SystemExit("checkpoint / model mismatch: missing %s, unexpected %s" % (missing[:5], unexpected[:5]))
    return config, model


# ----------------------------------------------------------------------------
# Objective: CE_main + λ·CE_mtp + α·BAL

def balance_loss(config, scores, topk_indices, B, T):
    """Sequence-wise balance loss of one MoE layer, averaged over the B sequences:
    Σ_e f_e·P_e, f_e = N/(K·T)·count_e (no gradient), P_e = mean_t s_e/Σ_j s_j."""
    N, K = config["n_routed_experts"], config["num_experts_per_tok"]
    s = scores.view(B, T, N)
    P = (s / s.sum(-1, keepdim=True)).mean(1)
    counts = torch.zeros(B, N, dtype=scores.dtype).scatter_add_(
        1, topk_indices.view(B, T * K), torch.ones(B, T * K, dtype=scores.dtype))
    f = counts * (N / (K * T))
    return (f * P).sum(-1).mean()


def objective(model, tokens, mtp_weight, balance_alpha):
    config = model.config
    B, T = tokens.shape
    V = config["vocab_size"]
    logits, mtp_logits, routings = model(tokens, with_mtp=mtp_weight != 0)
    ce_main = F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    zero = logits.new_zeros(())
    ce_mtp = zero
    if mtp_logits is not None and T >= 3:
        ce_mtp = F.cross_entropy(mtp_logits[:, :-1].reshape(-1, V), tokens[:, 2:].reshape(-1))
    bal = zero
    for layer, scores, idx in routings:
        if layer < model.num_hidden_layers:            # main model only, not the MTP layer
            bal = bal + balance_loss(config, scores, idx, B, T)
    loss = ce_main + mtp_weight * ce_mtp + balance_alpha * bal
    return loss, {"ce_main": ce_main, "ce_mtp": ce_mtp, "bal": bal}, routings


@torch.no_grad()
def update_routing_bias(model, routings, gamma):
    """b_e += γ·sign(mean_load − load_e) for every MoE layer (main and MTP), loads over the batch."""
    for layer, scores, idx in routings:
        gate = model.model.layers[layer].mlp.gate
        load = torch.bincount(idx.reshape(-1), minlength=gate.n_routed_experts).to(torch.float32)
        gate.e_score_correction_bias += gamma * torch.sign(load.mean() - load)


def learning_rate(schedule, step, total, warmup, peak):
    """whale's schedules (src/train/optimizer.cc)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = step / total if total > 0 else 0.0
    if schedule == "multistep":
        return peak if progress < 0.8 else peak * 0.316 if progress < 0.9 else peak * 0.1
    if schedule == "cosine":
        span = max(1, total - warmup)
        t = min(1.0, (step - warmup) / span)
        return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    return peak


# ----------------------------------------------------------------------------
# Data: whale's sample_batch (src/train/data.cc), bit for bit.

_M64 = (1 << 64) - 1


def _mix(x):
    x ^= x >> 33
    x = (x * 0xff51afd7ed558ccd) & _M64
    x ^= x >> 33
    x = (x * 0xc4ceb9fe1a85ec53) & _M64
    return x ^ (x >> 33)


def sample_batch(train, B, T, seed, step):
    span = len(train) - T + 1
    starts = [_mix((seed * 0x9e3779b97f4a7c15 + step * 1000003 + b) & _M64) % span for b in range(B)]
    return torch.from_numpy(np.stack([train[s:s + T] for s in starts]).astype(np.int64))


# ----------------------------------------------------------------------------
# Modes

def read_tokens_file(path):
    if path.endswith(".npy"):
        arr = np.load(path)
    else:
        with open(path) as f:
            obj = json.load(f)
        arr = np.array(obj["tokens"] if isinstance(obj, dict) else obj)
    arr = arr.astype(np.int64)
    if arr.ndim == 1:
        arr = arr[None, :]
    return torch.from_numpy(arr)


def run_check(args):
    config, model = build_model(args.model)
    if args.double:
        model = model.double()
    tokens = read_tokens_file(args.check)
    lam = args.mtp_weight if model.has_mtp else 0.0
    loss, parts, _ = objective(model, tokens, lam, args.balance_alpha)
    print("check: B=%d T=%d %s" % (tokens.shape[0], tokens.shape[1], "float64" if args.double else "float32"))
    print("loss %.9g (ce_main %.9g, ce_mtp %.9g, bal %.9g)" % (
        loss.item(), parts["ce_main"].item(), parts["ce_mtp"].item(), parts["bal"].item()))
    if not args.compare_grads:
        return 0
    loss.backward()
    ref, meta = read_safetensors(args.compare_grads)
    worst, worst_name, checked = 0.0, "", 0
    ours = dict(model.named_parameters())
    for name, g_ref in ref.items():
        if name not in ours:
            if not name.endswith("e_score_correction_bias"):
                print("  %s: not a parameter here" % name)
            continue
        g = ours[name].grad
        g = torch.zeros_like(ours[name]) if g is None else g
        g, g_ref = g.double(), g_ref.double()
        denom = max(g_ref.norm().item(), 1e-30)
        rel = (g - g_ref).norm().item() / denom if g_ref.norm().item() > 0 else g.norm().item()
        checked += 1
        if rel > worst:
            worst, worst_name = rel, name
    if meta:
        rl = float(meta.get("loss", "nan"))
        print("reference loss %.9g (ce_main %s, ce_mtp %s, bal %s); relative difference %.2e" % (
            rl, meta.get("ce_main"), meta.get("ce_mtp"), meta.get("bal"), abs(loss.item() - rl) / abs(rl)))
    print("gradients: %d tensors, worst relative L2 difference %.2e (%s)" % (checked, worst, worst_name))
    return 0


def run_train(args):
    torch.manual_seed(args.seed)
    config, model = build_model(args.model)
    model.train()
    train = np.fromfile(os.path.join(args.data, "train.bin"), dtype="<u4")
    if train.size < args.seq_len:
        raise SystemExit("train.bin has fewer tokens than --seq-len")
    if int(train.max()) >= config["vocab_size"]:
        raise SystemExit("token id %d is outside the model's vocabulary (%d)" % (int(train.max()), config["vocab_size"]))
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
    params = decay + no_decay
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    lam = args.mtp_weight if model.has_mtp else 0.0
    B, T = args.batch, args.seq_len
    nparams = sum(p.numel() for p in params)
    print("pytorch %s, %d threads (torch.get_num_threads() = %d), BLAS %s" % (
        torch.__version__, args.threads, torch.get_num_threads(), loaded_blas()))
    print("%d parameters, B=%d T=%d steps=%d, AdamW foreach=%s" % (
        nparams, B, T, args.steps, optimizer.defaults.get("foreach")), flush=True)
    log = open(args.log, "w") if args.log else None
    if log:
        log.write("step,tokens,loss,ce_main,ce_mtp,bal,lr,grad_norm,seconds,tokens_per_s\n")
    timed_tokens, timed_seconds = 0, 0.0
    for step in range(args.steps):
        t0 = time.perf_counter()
        tokens = sample_batch(train, B, T, args.seed, step)
        lr = learning_rate(args.schedule, step, args.steps, args.warmup, args.lr)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss, parts, routings = objective(model, tokens, lam, args.balance_alpha)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, args.clip) if args.clip > 0 else torch.zeros(())
        optimizer.step()
        if args.bias_gamma > 0:
            update_routing_bias(model, routings, args.bias_gamma)
        values = (loss.item(), parts["ce_main"].item(), parts["ce_mtp"].item(), parts["bal"].item(), grad_norm.item())
        seconds = time.perf_counter() - t0
        if step > 0:                      # the first step is warm-up
            timed_tokens += B * T
            timed_seconds += seconds
        print("step %4d  loss %.4f  ce_main %.4f  ce_mtp %.4f  bal %.4f  |g| %.3f  %.0f tok/s" % (
            (step,) + values + (B * T / seconds,)), flush=True)
        if log:
            log.write("%d,%d,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.6f,%.0f\n" % (
                (step, (step + 1) * B * T) + values[:4] + (lr, values[4], seconds, B * T / seconds)))
    if log:
        log.close()
    if timed_seconds > 0:
        print("tokens_per_s %.1f (steps 1..%d, %d tokens in %.3f s)" % (
            timed_tokens / timed_seconds, args.steps - 1, timed_tokens, timed_seconds))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder (config.json + model.safetensors, f32/bf16)")
    ap.add_argument("--data", help="data folder with train.bin (uint32 tokens), for training")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--schedule", default="multistep", choices=["multistep", "cosine", "constant"])
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--mtp-weight", type=float, default=0.3)
    ap.add_argument("--balance-alpha", type=float, default=1e-4)
    ap.add_argument("--bias-gamma", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0, help="batch sampling seed (whale's formula)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blas", choices=["openmp", "system"], default="openmp",
                    help="openmp: run torch on OpenBLAS' OpenMP build, as whale (default); "
                    "system: whatever libblas.so.3 points at")
    ap.add_argument("--log", help="write per-step CSV here")
    ap.add_argument("--check", metavar="TOKENS", help=".npy or JSON ([..] or {\"tokens\": [..]}) token file: "
                    "print the loss at the initial weights and exit")
    ap.add_argument("--compare-grads", metavar="SAFETENSORS",
                    help="with --check: compare gradients with this file (e.g. from `whale grad`)")
    ap.add_argument("--double", action="store_true", help="with --check: compute in float64")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.check:
        return run_check(args)
    if not args.data:
        ap.error("--data is required for training")
    return run_train(args)


if __name__ == "__main__":
    sys.exit(main())
