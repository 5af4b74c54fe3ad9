#!/usr/bin/env python3
# Makes the golden files of the model tests (tests/goldens/), in the manner of llm.c's
# test_gpt2: tiny random GPT-2, Llama (GQA, untied head) and Qwen2 (q/k/v biases, tied
# embeddings) checkpoints in Hugging Face format, and for each one the logits, loss, every
# parameter's gradient, per-layer hidden states and the losses of 3 AdamW steps on a fixed
# batch. The C++ suite reads only the committed output, so it never needs torch.
#
# The models are written in plain torch (transformers and safetensors are not installable
# here) and follow Hugging Face transformers' semantics exactly; the self-checks below
# compare each one against a second, independently written formulation before anything is
# written. References are computed in float64 from the stored weights and saved as F32, so
# the C++ fp32 model is compared with the exact answer, not with another fp32 rounding.
#
# Usage: /usr/bin/python3 tests/reference/make_goldens.py --out tests/goldens
# The output is byte-for-byte deterministic (one thread, fixed seeds, no timestamps).
# Layout and conventions: tests/reference/README.md.

import argparse
import json
import math
import os
import re
import sys

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

# Fixed token ids: 2 rows of 13. Training batch = first 7 as inputs, the next token as target;
# the KV-cache sequence = first 12. They include the first and last vocabulary ids (0, 96) and
# repeated tokens.
TOKENS = [
    [5, 17, 96, 0, 42, 42, 8, 63, 1, 77, 30, 91, 12],
    [88, 3, 3, 50, 96, 21, 64, 9, 70, 2, 45, 33, 60],
]
T_TRAIN = 7
T_LONG = 12
IGNORED_TARGET = (1, 4)  # (row, position) of the target replaced by IGNORE_INDEX

ADAMW = {
    "lr": 1e-2,
    "betas": [0.9, 0.95],
    "eps": 1e-8,
    "weight_decay": 0.1,
    "clip_grad_norm": 1.0,
    "steps": 3,
}
DECAY_RULE = ("weight_decay applies to every parameter with ndim >= 2 (all matrices, including "
              "token/position embeddings and lm_head); parameters with ndim == 1 (biases, norm "
              "weights and biases) get weight_decay 0")

# Safetensors dtype order of the reference implementation: tensors are laid out by
# descending dtype, then by name.
ST_DTYPE_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32",
                  "U32", "F32", "F64", "I64", "U64"]
ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.float64: "F64", torch.int64: "I64"}


# ---- safetensors and JSON writing ---------------------------------------------------------

def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.view(torch.int16)  # numpy has no bfloat16; the bits are what is stored
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> torch tensor already in the dtype to store."""
    order = sorted(tensors, key=lambda n: (-ST_DTYPE_ORDER.index(ST_DTYPE[tensors[n].dtype]), n))
    header = {"__metadata__": metadata or {"format": "pt"}}
    blobs = []
    offset = 0
    for name in order:
        t = tensors[name]
        blob = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    back = read_safetensors(path)
    assert set(back) == set(tensors), path
    for name, t in tensors.items():
        assert back[name] == (ST_DTYPE[t.dtype], list(t.shape), tensor_bytes(t)), (path, name)


def read_safetensors(path):
    """Parses a file back, independently of the writer's bookkeeping: name -> (dtype, shape,
    raw bytes). Used to check every file written."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    assert n % 8 == 0 and 8 + n <= len(data), path
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    body = data[8 + n:]
    spans = sorted((h["data_offsets"][0], h["data_offsets"][1]) for h in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(body), path
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), path
    return {k: (h["dtype"], h["shape"], body[h["data_offsets"][0]:h["data_offsets"][1]])
            for k, h in header.items()}


def write_json(path, obj):
    # Indented, with lists of numbers kept on one line so the files stay readable.
    text = json.dumps(obj, indent=2)
    text = re.sub(r"\[\s*([-+0-9.e,\s]*?)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


# ---- model configurations -----------------------------------------------------------------

def gpt2_config():
    # The fields transformers' GPT2Config.save_pretrained writes (n_inner null = 4 * n_embd).
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0,
        "bos_token_id": 96,
        "embd_pdrop": 0.0,
        "eos_token_id": 96,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": 32,
        "n_embd": 48,
        "n_head": 4,
        "n_inner": None,
        "n_layer": 2,
        "n_positions": 32,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.0,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": 97,
    }


def llama_config():
    # The fields transformers' LlamaConfig.save_pretrained writes.
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": 12,
        "hidden_act": "silu",
        "hidden_size": 48,
        "initializer_range": 0.02,
        "intermediate_size": 80,
        "max_position_embeddings": 32,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": 97,
    }


def qwen2_config():
    # The fields transformers' Qwen2Config.save_pretrained writes. Like real Qwen2 checkpoints
    # it has no "attention_bias" field: model_type qwen2 always has q/k/v biases (and no o_proj
    # bias). One KV head (4 query heads per KV head) and Qwen2's rope_theta 1e6 make it differ
    # from the Llama in the fields a loader could otherwise ignore.
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 48,
        "initializer_range": 0.02,
        "intermediate_size": 80,
        "max_position_embeddings": 32,
        "max_window_layers": 2,
        "model_type": "qwen2",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 97,
    }


def family(cfg):
    return "gpt2" if cfg["model_type"] == "gpt2" else "llama"


def has_qkv_bias(cfg):
    return cfg["model_type"] == "qwen2" or bool(cfg.get("attention_bias", False))


# ---- parameters ---------------------------------------------------------------------------

def param_shapes(cfg):
    """Parameter names and stored shapes, in Hugging Face state_dict (module) order."""
    V = cfg["vocab_size"]
    shapes = {}
    if family(cfg) == "gpt2":
        C, L = cfg["n_embd"], cfg["n_layer"]
        hidden = cfg["n_inner"] or 4 * C
        shapes["transformer.wte.weight"] = (V, C)
        shapes["transformer.wpe.weight"] = (cfg["n_positions"], C)
        for l in range(L):
            p = f"transformer.h.{l}."
            shapes[p + "ln_1.weight"] = (C,)
            shapes[p + "ln_1.bias"] = (C,)
            shapes[p + "attn.c_attn.weight"] = (C, 3 * C)  # Conv1D: (in, out)
            shapes[p + "attn.c_attn.bias"] = (3 * C,)
            shapes[p + "attn.c_proj.weight"] = (C, C)
            shapes[p + "attn.c_proj.bias"] = (C,)
            shapes[p + "ln_2.weight"] = (C,)
            shapes[p + "ln_2.bias"] = (C,)
            shapes[p + "mlp.c_fc.weight"] = (C, hidden)
            shapes[p + "mlp.c_fc.bias"] = (hidden,)
            shapes[p + "mlp.c_proj.weight"] = (hidden, C)
            shapes[p + "mlp.c_proj.bias"] = (C,)
        shapes["transformer.ln_f.weight"] = (C,)
        shapes["transformer.ln_f.bias"] = (C,)
        return shapes
    C, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = C // NH
    I = cfg["intermediate_size"]
    bias = has_qkv_bias(cfg)
    shapes["model.embed_tokens.weight"] = (V, C)
    for l in range(L):
        p = f"model.layers.{l}."
        shapes[p + "self_attn.q_proj.weight"] = (NH * hd, C)  # Linear: (out, in)
        if bias:
            shapes[p + "self_attn.q_proj.bias"] = (NH * hd,)
        shapes[p + "self_attn.k_proj.weight"] = (NKV * hd, C)
        if bias:
            shapes[p + "self_attn.k_proj.bias"] = (NKV * hd,)
        shapes[p + "self_attn.v_proj.weight"] = (NKV * hd, C)
        if bias:
            shapes[p + "self_attn.v_proj.bias"] = (NKV * hd,)
        shapes[p + "self_attn.o_proj.weight"] = (C, NH * hd)
        shapes[p + "mlp.gate_proj.weight"] = (I, C)
        shapes[p + "mlp.up_proj.weight"] = (I, C)
        shapes[p + "mlp.down_proj.weight"] = (C, I)
        shapes[p + "input_layernorm.weight"] = (C,)
        shapes[p + "post_attention_layernorm.weight"] = (C,)
    shapes["model.norm.weight"] = (C,)
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def init_params(cfg, seed):
    """fp32 random weights. Every tensor is far from its usual init (norm gains around 1 but
    not 1, non-zero biases) so that a transposed matrix, a dropped bias or a norm weight read
    from the wrong tensor changes the logits."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        is_norm = any(k in name for k in ("ln_", "layernorm", "norm."))
        params[name] = 1.0 + 0.2 * noise if is_norm and name.endswith(".weight") else 0.1 * noise
    return params


# ---- the models (Hugging Face semantics) --------------------------------------------------

def causal_attention(q, k, v):
    # q (B,NH,T,hd), k/v (B,NH,T,hd). HF GPT-2 and Llama eager attention: scores / sqrt(hd),
    # future positions masked with the dtype's minimum, softmax over keys.
    T, hd = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def loop_attention(q, k, v):
    # Second formulation for the self-check: per query, an explicit softmax over the keys
    # it may see; no mask, no batched matmul.
    B, NH, T, hd = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(NH):
            for t in range(T):
                s = (k[b, h, : t + 1] * q[b, h, t]).sum(-1) / math.sqrt(hd)
                w = torch.exp(s - s.max())
                w = w / w.sum()
                out[b, h, t] = (w[:, None] * v[b, h, : t + 1]).sum(0)
    return out


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def gpt2_forward(p, cfg, ids, attention=causal_attention, gelu=gelu_new, layer_norm=None):
    B, T = ids.shape
    C, NH, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    hd = C // NH
    eps = cfg["layer_norm_epsilon"]
    if layer_norm is None:
        def layer_norm(x, w, b):
            return F.layer_norm(x, (C,), w, b, eps)
    hidden = {}
    x = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][torch.arange(T)]
    hidden["embed"] = x
    for l in range(L):
        pre = f"transformer.h.{l}."
        a = layer_norm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        qkv = a @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
        q, k, v = (t.reshape(B, T, NH, hd).transpose(1, 2) for t in qkv.split(C, dim=2))
        y = attention(q, k, v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        m = layer_norm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        m = gelu(m @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"])
        x = x + m @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
        hidden[str(l)] = x
    x = layer_norm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    hidden["final_norm"] = x
    return x @ p["transformer.wte.weight"].t(), hidden


def rms_norm(x, w, eps):
    # HF LlamaRMSNorm: in fp32 (here float64), x * rsqrt(mean(x^2) + eps) * weight.
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_cos_sin(T, hd, theta, dtype):
    # HF default rotary embedding: inv_freq[i] = 1 / theta^(2i/hd), i < hd/2; the angle table
    # is duplicated to hd columns (cat(freqs, freqs)) for the rotate-half convention.
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_rotate_half(x, cos, sin):
    # x (B,H,T,hd), cos/sin (T,hd)
    return x * cos + rotate_half(x) * sin


def rope_pairs(x, cos, sin):
    # Second formulation for the self-check: dimension i and i + hd/2 form one pair, rotated
    # by the angle of frequency i.
    half = x.shape[-1] // 2
    out = torch.empty_like(x)
    for i in range(half):
        c, s = cos[:, i], sin[:, i]
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * c - b * s
        out[..., i + half] = a * s + b * c
    return out


def repeat_kv_attention(q, k, v):
    # HF repeat_kv: query head h reads KV head h // n_rep.
    n_rep = q.shape[1] // k.shape[1]
    B, NKV, T, hd = k.shape
    k = k[:, :, None].expand(B, NKV, n_rep, T, hd).reshape(B, NKV * n_rep, T, hd)
    v = v[:, :, None].expand(B, NKV, n_rep, T, hd).reshape(B, NKV * n_rep, T, hd)
    return causal_attention(q, k, v)


def grouped_attention(q, k, v):
    # Second formulation for the self-check: queries grouped per KV head, no K/V copies.
    B, NH, T, hd = q.shape
    NKV = k.shape[1]
    n_rep = NH // NKV
    qg = q.reshape(B, NKV, n_rep, T, hd)
    out = torch.empty_like(qg)
    for g in range(NKV):
        kg, vg = k[:, g:g + 1].expand(B, n_rep, T, hd), v[:, g:g + 1].expand(B, n_rep, T, hd)
        out[:, g] = loop_attention(qg[:, g], kg, vg)
    return out.reshape(B, NH, T, hd)


def llama_forward(p, cfg, ids, attention=repeat_kv_attention, rope=rope_rotate_half,
                  norm=rms_norm):
    B, T = ids.shape
    C, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = C // NH
    eps = cfg["rms_norm_eps"]
    bias = has_qkv_bias(cfg)
    x = p["model.embed_tokens.weight"]
    cos, sin = rope_cos_sin(T, hd, cfg["rope_theta"], x.dtype)
    x = x[ids]
    hidden = {"embed": x}

    def linear(h, name):
        y = h @ p[name + ".weight"].t()
        return y + p[name + ".bias"] if name + ".bias" in p else y

    for l in range(L):
        pre = f"model.layers.{l}."
        h = norm(x, p[pre + "input_layernorm.weight"], eps)
        q = linear(h, pre + "self_attn.q_proj").reshape(B, T, NH, hd).transpose(1, 2)
        k = linear(h, pre + "self_attn.k_proj").reshape(B, T, NKV, hd).transpose(1, 2)
        v = linear(h, pre + "self_attn.v_proj").reshape(B, T, NKV, hd).transpose(1, 2)
        assert bias == (pre + "self_attn.q_proj.bias" in p)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        y = attention(q, k, v).transpose(1, 2).reshape(B, T, NH * hd)
        x = x + linear(y, pre + "self_attn.o_proj")
        h = norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        m = F.silu(linear(h, pre + "mlp.gate_proj")) * linear(h, pre + "mlp.up_proj")
        x = x + linear(m, pre + "mlp.down_proj")
        hidden[str(l)] = x
    x = norm(x, p["model.norm.weight"], eps)
    hidden["final_norm"] = x
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    return x @ head.t(), hidden


def forward(p, cfg, ids, **impl):
    return (gpt2_forward if family(cfg) == "gpt2" else llama_forward)(p, cfg, ids, **impl)


def lm_loss(logits, targets):
    # Mean cross-entropy over the targets that are not IGNORE_INDEX.
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


# ---- self-checks: each model against a second formulation ---------------------------------

def check_close(what, a, b, tol):
    err = (a - b).abs().max().item()
    if not err <= tol:
        sys.exit(f"make_goldens.py: self-check failed: {what}: max |diff| {err:.3e} > {tol:.0e}")
    return err


def manual_layer_norm(eps):
    def ln(x, w, b):
        mu = x.sum(-1, keepdim=True) / x.shape[-1]
        var = ((x - mu) ** 2).sum(-1, keepdim=True) / x.shape[-1]
        return (x - mu) / torch.sqrt(var + eps) * w + b
    return ln


def manual_rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) / x.shape[-1] + eps) * w


def self_check(name, p, cfg, ids, targets):
    logits, _ = forward(p, cfg, ids)
    if family(cfg) == "gpt2":
        alt, _ = gpt2_forward(p, cfg, ids, attention=loop_attention,
                              gelu=lambda x: F.gelu(x, approximate="tanh"),
                              layer_norm=manual_layer_norm(cfg["layer_norm_epsilon"]))
        what = "explicit per-query softmax, torch tanh-GELU, hand LayerNorm"
    else:
        alt, _ = llama_forward(p, cfg, ids, attention=grouped_attention, rope=rope_pairs,
                               norm=manual_rms_norm)
        what = "grouped-query attention without K/V repeat, pairwise RoPE, hand RMSNorm"
    err = check_close(f"{name}: forward vs {what}", logits, alt, 1e-10)

    # Loss against a hand log-sum-exp over the non-ignored targets.
    flat, tg = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    keep = tg != IGNORE_INDEX
    nll = torch.logsumexp(flat[keep], -1) - flat[keep].gather(1, tg[keep, None])[:, 0]
    check_close(f"{name}: loss vs hand cross-entropy", lm_loss(logits, targets), nll.mean(), 1e-12)

    # Autograd against a central finite difference along one random direction.
    names = sorted(p)
    loss = lm_loss(logits, targets)
    grads = torch.autograd.grad(loss, [p[n] for n in names])
    gen = torch.Generator().manual_seed(1234)
    dirs = [torch.randn(p[n].shape, generator=gen, dtype=torch.float64) for n in names]
    slope = sum((g * d).sum() for g, d in zip(grads, dirs)).item()
    h = 1e-5
    with torch.no_grad():
        plus = {n: p[n] + h * d for n, d in zip(names, dirs)}
        minus = {n: p[n] - h * d for n, d in zip(names, dirs)}
        fd = (lm_loss(forward(plus, cfg, ids)[0], targets)
              - lm_loss(forward(minus, cfg, ids)[0], targets)).item() / (2 * h)
    rel = abs(fd - slope) / max(abs(slope), 1e-12)
    if not rel < 1e-6:
        sys.exit(f"make_goldens.py: self-check failed: {name}: directional derivative "
                 f"autograd {slope!r} vs finite difference {fd!r} (rel {rel:.2e})")
    print(f"  self-check {name}: second formulation max|diff| {err:.1e}, "
          f"finite-difference rel {rel:.1e}")


# ---- AdamW with global-norm clipping ------------------------------------------------------

def decays(shape):
    return len(shape) >= 2


def hand_adamw_step(p, grads, state, t):
    # The documented convention (README.md), written out; it must equal torch.optim.AdamW.
    lr, (b1, b2), eps = ADAMW["lr"], ADAMW["betas"], ADAMW["eps"]
    total = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    scale = min(1.0, ADAMW["clip_grad_norm"] / (total + 1e-6))
    out = {}
    for n, w in p.items():
        g = grads[n] * scale
        m, v = state.get(n, (torch.zeros_like(w), torch.zeros_like(w)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[n] = (m, v)
        wd = ADAMW["weight_decay"] if decays(w.shape) else 0.0
        w = w * (1 - lr * wd)
        step_size = lr / (1 - b1 ** t)
        denom = v.sqrt() / math.sqrt(1 - b2 ** t) + eps
        out[n] = w - step_size * m / denom
    return out


def adamw_run(name, p0, cfg, ids, targets):
    names = list(p0)
    p = {n: p0[n].detach().clone().requires_grad_(True) for n in names}
    decay = [p[n] for n in names if decays(p[n].shape)]
    no_decay = [p[n] for n in names if not decays(p[n].shape)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": ADAMW["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=ADAMW["lr"], betas=tuple(ADAMW["betas"]), eps=ADAMW["eps"])
    hand = {n: p0[n].detach().clone() for n in names}
    hand_state = {}
    losses, norms = [], []
    for t in range(1, ADAMW["steps"] + 1):
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(forward(p, cfg, ids)[0], targets)
        loss.backward()
        grads = {n: p[n].grad.detach().clone() for n in names}
        norm = torch.nn.utils.clip_grad_norm_([p[n] for n in names], ADAMW["clip_grad_norm"])
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
        # The hand formula starts from the same weights (checked below at every step), so it
        # may reuse torch's unclipped gradients.
        with torch.no_grad():
            hand = hand_adamw_step(hand, grads, hand_state, t)
            for n in names:
                check_close(f"{name}: AdamW step {t} {n} vs the documented formula",
                            p[n], hand[n], 1e-12 if p[n].dtype == torch.float64 else 1e-5)
    with torch.no_grad():
        loss_after = lm_loss(forward(p, cfg, ids)[0], targets).item()
    return losses, norms, loss_after


# ---- tolerances the C++ tests use, checked against an fp32 run here ----------------------

# grad_rel: per tensor, max |grad - golden| <= grad_rel * max |golden|. The others are
# absolute, over every element of the tensor (or each of the AdamW losses).
TOLERANCES = {"logits_abs": 1e-4, "hidden_abs": 1e-4, "loss_abs": 1e-5, "grad_rel": 1e-3,
              "adamw_loss_abs": 1e-4}
FP32_MARGIN = 10


def check_fp32_fits(name, tensors, cfg, gold, adamw_losses):
    """The same computation in fp32 (what the C++ model does) must meet every tolerance with
    a FP32_MARGIN-fold margin, so the tolerances are reachable and not loose by accident."""
    ids, targets, ids_long = gold["input_ids"], gold["targets"], gold["input_ids_long"]
    p = {n: t.to(torch.float32).requires_grad_(True) for n, t in tensors.items()}
    logits, hidden = forward(p, cfg, ids)
    loss = lm_loss(logits, targets)
    loss.backward()
    with torch.no_grad():
        logits_long, _ = forward(p, cfg, ids_long)
    err = {
        "logits_abs": max((logits - gold["logits"]).abs().max().item(),
                          (logits_long - gold["logits_long"]).abs().max().item()),
        "hidden_abs": max((h - gold["hidden." + k]).abs().max().item() for k, h in hidden.items()),
        "loss_abs": abs(loss.item() - gold["loss"].item()),
    }
    if "grad." + next(iter(p)) in gold:
        err["grad_rel"] = max(((p[n].grad - gold["grad." + n]).abs().max()
                               / gold["grad." + n].abs().max()).item() for n in p)
    losses32, _, after32 = adamw_run(name + " (fp32)", {n: t.to(torch.float32)
                                                        for n, t in tensors.items()},
                                     cfg, ids, targets)
    err["adamw_loss_abs"] = max(abs(a - b) for a, b in zip(losses32 + [after32], adamw_losses))
    for k, e in err.items():
        if not e * FP32_MARGIN <= TOLERANCES[k]:
            sys.exit(f"make_goldens.py: self-check failed: {name}: an fp32 run is off by "
                     f"{e:.2e} in {k}, not {FP32_MARGIN}x inside the tolerance {TOLERANCES[k]}")
    print(f"  fp32 run of {name}: " + ", ".join(f"{k} {e:.1e}" for k, e in err.items()))


# ---- one model: checkpoint + goldens ------------------------------------------------------

def batch():
    tokens = torch.tensor(TOKENS, dtype=torch.int64)
    ids = tokens[:, :T_TRAIN].clone()
    targets = tokens[:, 1:T_TRAIN + 1].clone()
    targets[IGNORED_TARGET] = IGNORE_INDEX
    return ids, targets, tokens[:, :T_LONG].clone()


def stored(params_f32, dtype):
    return {n: w.to(dtype) for n, w in params_f32.items()}


def write_checkpoint(dirpath, cfg, tensors, shards=1):
    os.makedirs(dirpath, exist_ok=True)
    cfg = dict(cfg)
    cfg["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[
        ST_DTYPE[next(iter(tensors.values())).dtype]]
    write_json(os.path.join(dirpath, "config.json"), cfg)
    if shards == 1:
        write_safetensors(os.path.join(dirpath, "model.safetensors"), tensors)
        return
    # Fill shards in state_dict order up to an equal share of the bytes, as HF's
    # save_pretrained does with max_shard_size; the boundary falls inside a layer.
    sizes = {n: t.numel() * t.element_size() for n, t in tensors.items()}
    total = sum(sizes.values())
    files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map, parts, acc = {}, [dict() for _ in range(shards)], 0
    for n, t in tensors.items():
        i = min(shards - 1, acc * shards // total)
        parts[i][n] = t
        weight_map[n] = files[i]
        acc += sizes[n]
    for f, part in zip(files, parts):
        write_safetensors(os.path.join(dirpath, f), part)
    write_json(os.path.join(dirpath, "model.safetensors.index.json"),
               {"metadata": {"total_size": total},
                "weight_map": dict(sorted(weight_map.items()))})


def make_model(out, name, cfg, params_f32, weights_dtype, with_grads):
    """Writes the checkpoint of `params_f32` stored as `weights_dtype` into out/name and the
    goldens computed from exactly those stored values."""
    tensors = stored(params_f32, weights_dtype)
    dirpath = os.path.join(out, name)
    write_checkpoint(dirpath, cfg, tensors)

    ids, targets, ids_long = batch()
    p = {n: t.to(torch.float64).requires_grad_(True) for n, t in tensors.items()}
    self_check(name, p, cfg, ids, targets)
    logits, hidden = forward(p, cfg, ids)
    loss = lm_loss(logits, targets)
    loss.backward()
    with torch.no_grad():
        logits_long, _ = forward(p, cfg, ids_long)
        check_close(f"{name}: causal prefix of the long sequence", logits_long[:, :T_TRAIN],
                    logits, 1e-12)

    gold = {"input_ids": ids, "targets": targets, "input_ids_long": ids_long,
            "logits": logits, "loss": loss.reshape(1), "logits_long": logits_long}
    for k, h in hidden.items():
        gold["hidden." + k] = h
    if with_grads:
        for n in p:
            gold["grad." + n] = p[n].grad
    gold = {k: (v if v.dtype == torch.int64 else v.detach().to(torch.float32))
            for k, v in gold.items()}
    write_safetensors(os.path.join(dirpath, "goldens.safetensors"), gold)

    losses, norms, loss_after = adamw_run(name, {n: t.to(torch.float64)
                                                 for n, t in tensors.items()},
                                          cfg, ids, targets)
    check_fp32_fits(name, tensors, cfg, gold, losses + [loss_after])
    L = cfg.get("n_layer", cfg.get("num_hidden_layers"))
    info = {
        "model": name,
        "model_type": cfg["model_type"],
        "weights_dtype": ST_DTYPE[weights_dtype],
        "reference": "float64 computation from the stored weights, results stored as F32",
        "ignore_index": IGNORE_INDEX,
        "input_ids": ids.tolist(),
        "targets": targets.tolist(),
        "n_valid_targets": int((targets != IGNORE_INDEX).sum()),
        "loss": loss.item(),
        "input_ids_long": ids_long.tolist(),
        "hidden_states": (["hidden.embed"] + [f"hidden.{l}" for l in range(L)]
                          + ["hidden.final_norm"]),
        "has_grads": with_grads,
        "adamw": {
            **ADAMW,
            "decay_rule": DECAY_RULE,
            "decayed_params": [n for n in tensors if decays(tensors[n].shape)],
            "clip_rule": ("total = sqrt(sum of squares of every gradient); scale = min(1, "
                          "clip_grad_norm / (total + 1e-6)); every gradient *= scale"),
            "update_rule": ("w *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; "
                            "w -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps); "
                            "t = 1, 2, 3; m, v start at 0"),
            "losses": losses,
            "grad_norms_before_clip": norms,
            "loss_after": loss_after,
        },
        "tensors": {k: {"dtype": ST_DTYPE[v.dtype], "shape": list(v.shape)}
                    for k, v in sorted(gold.items())},
        "tolerances": TOLERANCES,
        "tolerance_rule": ("grad_rel: per tensor, max|grad - golden| <= grad_rel * "
                           "max|golden|; the others: max absolute difference over every "
                           "element (adamw_loss_abs: over losses and loss_after)"),
    }
    write_json(os.path.join(dirpath, "goldens.json"), info)
    print(f"  {name}: loss {loss.item():.6f}, AdamW losses "
          + ", ".join(f"{x:.6f}" for x in losses) + f" -> {loss_after:.6f}, "
          + "grad norms " + ", ".join(f"{x:.3f}" for x in norms))
    return info


def main():
    ap = argparse.ArgumentParser(description="Writes the model goldens (tests/reference/README.md).")
    ap.add_argument("--out", required=True, help="output directory, e.g. tests/goldens")
    args = ap.parse_args()
    if sys.byteorder != "little":
        sys.exit("make_goldens.py: safetensors data is little-endian; run on a little-endian host")
    torch.set_num_threads(1)  # a fixed reduction order: same bytes on every run
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)

    gpt2, llama, qwen2 = gpt2_config(), llama_config(), qwen2_config()
    gpt2_w = init_params(gpt2, seed=1)
    llama_w = init_params(llama, seed=2)
    qwen2_w = init_params(qwen2, seed=3)

    models = [
        # name, config, fp32 weights, stored dtype, gradients in the goldens
        ("gpt2-tiny", gpt2, gpt2_w, torch.float32, True),
        ("gpt2-tiny-bf16", gpt2, gpt2_w, torch.bfloat16, False),
        ("gpt2-tiny-f16", gpt2, gpt2_w, torch.float16, False),
        ("llama-tiny", llama, llama_w, torch.float32, True),
        ("qwen2-tiny", qwen2, qwen2_w, torch.float32, True),
    ]
    manifest = []
    for name, cfg, w, dt, grads in models:
        make_model(args.out, name, cfg, w, dt, grads)
        manifest.append({"name": name, "checkpoint": name, "goldens": name,
                         "model_type": cfg["model_type"], "weights_dtype": ST_DTYPE[dt],
                         "has_grads": grads, "sharded": False})

    # Same weights as llama-tiny in two shards + index; its goldens are llama-tiny's.
    write_checkpoint(os.path.join(args.out, "llama-tiny-sharded"), llama,
                     stored(llama_w, torch.float32), shards=2)
    manifest.append({"name": "llama-tiny-sharded", "checkpoint": "llama-tiny-sharded",
                     "goldens": "llama-tiny", "model_type": "llama", "weights_dtype": "F32",
                     "has_grads": True, "sharded": True})
    write_json(os.path.join(args.out, "manifest.json"),
               {"generator": "tests/reference/make_goldens.py", "torch": torch.__version__,
                "models": manifest})


if __name__ == "__main__":
    main()
