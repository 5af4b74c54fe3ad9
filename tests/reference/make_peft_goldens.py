#!/usr/bin/env python3
# Makes the PEFT adapter goldens (tests/goldens/peft/): for the tiny GPT-2 and Llama
# checkpoints of tests/goldens/, a LoRA, a prefix-tuning and a prompt-tuning adapter in
# Hugging Face PEFT's on-disk format (adapter_config.json + adapter_model.safetensors), and
# the logits the adapted model gives, computed here in plain torch (float64, stored as F32)
# following PEFT's semantics for a causal LM:
#
#   LoRA          every targeted linear returns base(x) + scaling * lora_B(lora_A(x)), scaling =
#                 lora_alpha / r (r and lora_alpha from rank_pattern / alpha_pattern when a pattern
#                 matches the module); GPT-2's Conv1D (fan_in_fan_out) changes only how the base
#                 weight is stored, not lora_A (r, in) / lora_B (out, r). On GPT-2 the pair on c_attn
#                 spans the fused q|k|v output.
#   prefix        prompt_embeddings (P, L*2*token_dim) viewed as (P, 2L, NKV, hd): entries 2l and
#                 2l+1 are layer l's past keys and values, attended to by every query without a
#                 mask; the real tokens' positions start at P (Hugging Face with a past), and the
#                 past keys are used as given (not rotated again).
#   prompt        prompt_embeddings (P, C) prepended to the token embeddings; positions count the
#                 virtual tokens (0..P+T-1); the logits of the real tokens are the last T rows.
#
# transformers and peft are not needed (nor installable here): the forward passes are written
# out below and checked, before anything is written, against make_goldens.py's own forward:
# LoRA against the base model with W + scaling*B@A merged into its weights; prompt tuning
# with the prompt set to real tokens' embeddings against the model run on those tokens
# followed by the input; prefix tuning with the prefix set to the keys and values the model
# computes for real tokens, against the same. Agreement to 1e-10.
#
# Usage: /usr/bin/python3 tests/reference/make_peft_goldens.py --out tests/goldens/peft
# Deterministic (fixed seeds, one thread). The C++ test is tests/model/test_peft.cpp.
# `make_peft_goldens.py apply --model DIR --adapter DIR --tokens 1,2,3` prints the logits of any
# PEFT adapter on an F32 checkpoint under the same semantics (e.g. one tunebench exported).

import argparse
import json
import math
import os
import re
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_goldens as mg  # noqa: E402

TOKENS = [row[:7] for row in mg.TOKENS]
P_VIRTUAL = 3


def load_checkpoint(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    body = data[8 + n:]
    out = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", (path, name)
        a, b = h["data_offsets"]
        out[name] = torch.frombuffer(bytearray(body[a:b]), dtype=torch.float32).reshape(h["shape"]).to(torch.float64)
    return out


# ---- the adapted forward (PEFT semantics) -------------------------------------------------

def attend(q, k, v, n_prefix):
    # q (B,H,T,hd); k, v (B,H,n_prefix+T,hd): the prefix is visible to every query, the rest causal.
    T, hd = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    mask = torch.ones(T, n_prefix + T, dtype=torch.bool)
    mask[:, n_prefix:] = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def gpt2_adapted(p, cfg, ids, lora=None, prefix=None, prompt=None, want_kv=False):
    B, T = ids.shape
    C, NH, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    hd = C // NH
    eps = cfg["layer_norm_epsilon"]
    lora = lora or {}

    def ln(x, w, b):
        return F.layer_norm(x, (C,), w, b, eps)

    def conv1d(x, module):
        y = x @ p[module + ".weight"] + p[module + ".bias"]  # Conv1D: weight (in, out)
        if module in lora:
            A, Bm, s = lora[module]
            y = y + s * ((x @ A.t()) @ Bm.t())
        return y

    P = prefix.shape[0] if prefix is not None else 0
    x = p["transformer.wte.weight"][ids]
    Pv = 0
    if prompt is not None:
        Pv = prompt.shape[0]
        x = torch.cat([prompt[None].expand(B, Pv, C), x], dim=1)
    Tt = Pv + T
    x = x + p["transformer.wpe.weight"][torch.arange(P, P + Tt)]
    kvs = []
    for l in range(L):
        pre = f"transformer.h.{l}."
        a = ln(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        qkv = conv1d(a, pre + "attn.c_attn")
        q, k, v = (t.reshape(B, Tt, NH, hd).transpose(1, 2) for t in qkv.split(C, dim=2))
        kvs.append((k, v))
        if P:
            view = prefix.reshape(P, 2 * L, NH, hd)
            pk = view[:, 2 * l].permute(1, 0, 2)[None].expand(B, NH, P, hd)
            pv = view[:, 2 * l + 1].permute(1, 0, 2)[None].expand(B, NH, P, hd)
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        y = attend(q, k, v, P).transpose(1, 2).reshape(B, Tt, C)
        x = x + conv1d(y, pre + "attn.c_proj")
        m = ln(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        m = mg.gelu_new(conv1d(m, pre + "mlp.c_fc"))
        x = x + conv1d(m, pre + "mlp.c_proj")
    x = ln(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    logits = (x @ p["transformer.wte.weight"].t())[:, Pv:]
    return (logits, kvs) if want_kv else logits


def llama_adapted(p, cfg, ids, lora=None, prefix=None, prompt=None, want_kv=False):
    B, T = ids.shape
    C, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    lora = lora or {}

    def linear(h, module):
        y = h @ p[module + ".weight"].t()
        if module + ".bias" in p:
            y = y + p[module + ".bias"]
        if module in lora:
            A, Bm, s = lora[module]
            y = y + s * ((h @ A.t()) @ Bm.t())
        return y

    P = prefix.shape[0] if prefix is not None else 0
    x = p["model.embed_tokens.weight"][ids]
    Pv = 0
    if prompt is not None:
        Pv = prompt.shape[0]
        x = torch.cat([prompt[None].expand(B, Pv, C), x], dim=1)
    Tt = Pv + T
    cos, sin = mg.rope_cos_sin(P + Tt, hd, cfg["rope_theta"], x.dtype)
    cos, sin = cos[P:], sin[P:]
    n_rep = NH // NKV
    kvs = []
    for l in range(L):
        pre = f"model.layers.{l}."
        h = mg.rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = linear(h, pre + "self_attn.q_proj").reshape(B, Tt, NH, hd).transpose(1, 2)
        k = linear(h, pre + "self_attn.k_proj").reshape(B, Tt, NKV, hd).transpose(1, 2)
        v = linear(h, pre + "self_attn.v_proj").reshape(B, Tt, NKV, hd).transpose(1, 2)
        q, k = mg.rope_rotate_half(q, cos, sin), mg.rope_rotate_half(k, cos, sin)
        kvs.append((k, v))
        if P:
            view = prefix.reshape(P, 2 * L, NKV, hd)
            pk = view[:, 2 * l].permute(1, 0, 2)[None].expand(B, NKV, P, hd)
            pv = view[:, 2 * l + 1].permute(1, 0, 2)[None].expand(B, NKV, P, hd)
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        S = k.shape[2]
        k = k[:, :, None].expand(B, NKV, n_rep, S, hd).reshape(B, NH, S, hd)
        v = v[:, :, None].expand(B, NKV, n_rep, S, hd).reshape(B, NH, S, hd)
        y = attend(q, k, v, P).transpose(1, 2).reshape(B, Tt, NH * hd)
        x = x + linear(y, pre + "self_attn.o_proj")
        h = mg.rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        m = F.silu(linear(h, pre + "mlp.gate_proj")) * linear(h, pre + "mlp.up_proj")
        x = x + linear(m, pre + "mlp.down_proj")
    x = mg.rms_norm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    logits = (x @ head.t())[:, Pv:]
    return (logits, kvs) if want_kv else logits


def adapted(p, cfg, ids, **kw):
    return (gpt2_adapted if mg.family(cfg) == "gpt2" else llama_adapted)(p, cfg, ids, **kw)


# ---- the adapters -------------------------------------------------------------------------

def pattern_value(patterns, module, default):
    # PEFT's get_pattern_key: the first pattern matching the end of the module path at a dot.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_adapter(cfg, gen):
    if mg.family(cfg) == "gpt2":
        C = cfg["n_embd"]
        targets = {"attn.c_attn": (C, 3 * C), "mlp.c_fc": (C, 4 * C)}
        layers, r, alpha = range(cfg["n_layer"]), 4, 8.0
        rank_pattern, alpha_pattern = {}, {}
    else:
        C, hd = cfg["hidden_size"], cfg["head_dim"]
        q, kv, Fi = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, cfg["intermediate_size"]
        targets = {"self_attn.q_proj": (C, q), "self_attn.v_proj": (C, kv), "mlp.down_proj": (Fi, C)}
        layers, r, alpha = range(cfg["num_hidden_layers"]), 4, 8.0
        # Exercise PEFT's per-module overrides: down_proj at rank 2 and alpha 3.
        rank_pattern, alpha_pattern = {"down_proj": 2}, {"down_proj": 3.0}
    prefix = "transformer.h." if mg.family(cfg) == "gpt2" else "model.layers."
    tensors, lora = {}, {}
    for l in layers:
        for name, (fan_in, fan_out) in targets.items():
            module = f"{prefix}{l}.{name}"
            rk = pattern_value(rank_pattern, module, r)
            al = pattern_value(alpha_pattern, module, alpha)
            A = 0.3 * torch.randn(rk, fan_in, generator=gen, dtype=torch.float64)
            Bm = 0.3 * torch.randn(fan_out, rk, generator=gen, dtype=torch.float64)
            A, Bm = A.float().double(), Bm.float().double()  # the values stored as F32
            lora[module] = (A, Bm, al / rk)
            tensors[f"base_model.model.{module}.lora_A.weight"] = A.float()
            tensors[f"base_model.model.{module}.lora_B.weight"] = Bm.float()
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": None,
        "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
        "target_modules": sorted({n.split(".")[-1] for n in targets}),
        "fan_in_fan_out": mg.family(cfg) == "gpt2", "bias": "none", "use_rslora": False,
        "use_dora": False, "modules_to_save": None, "init_lora_weights": True,
        "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern, "inference_mode": True,
    }
    return config, tensors, {"lora": lora}


def kv_dims(cfg):
    if mg.family(cfg) == "gpt2":
        return cfg["n_layer"], cfg["n_head"], cfg["n_embd"] // cfg["n_head"]
    return cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_dim"]


def prefix_adapter(cfg, gen):
    L, NKV, hd = kv_dims(cfg)
    emb = (0.5 * torch.randn(P_VIRTUAL, L * 2 * NKV * hd, generator=gen, dtype=torch.float64)).float()
    config = {
        "peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "base_model_name_or_path": None,
        "num_virtual_tokens": P_VIRTUAL, "token_dim": NKV * hd, "num_transformer_submodules": 1,
        "num_attention_heads": NKV, "num_layers": L, "encoder_hidden_size": NKV * hd,
        "prefix_projection": False, "inference_mode": True,
    }
    return config, {"prompt_embeddings": emb}, {"prefix": emb.double()}


def prompt_adapter(cfg, gen):
    C = cfg["n_embd"] if mg.family(cfg) == "gpt2" else cfg["hidden_size"]
    L = kv_dims(cfg)[0]
    emb = (0.1 * torch.randn(P_VIRTUAL, C, generator=gen, dtype=torch.float64)).float()
    config = {
        "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "base_model_name_or_path": None,
        "num_virtual_tokens": P_VIRTUAL, "token_dim": C, "num_transformer_submodules": 1,
        "num_attention_heads": cfg.get("n_head", cfg.get("num_attention_heads")), "num_layers": L,
        "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "tokenizer_name_or_path": None,
        "inference_mode": True,
    }
    return config, {"prompt_embeddings": emb}, {"prompt": emb.double()}


# ---- self-checks against make_goldens.py's forward -----------------------------------------

def close(what, a, b, tol=1e-10):
    err = (a - b).abs().max().item()
    if not err <= tol:
        sys.exit(f"self-check failed: {what}: max |diff| {err:.3g} > {tol}")


def self_check(name, p, cfg, ids, lora):
    # LoRA = base with merged weights (Conv1D stores W as (in, out): add (s*B@A).T).
    merged = dict(p)
    gpt2 = mg.family(cfg) == "gpt2"
    for module, (A, Bm, s) in lora.items():
        delta = s * (Bm @ A)
        merged[module + ".weight"] = p[module + ".weight"] + (delta.t() if gpt2 else delta)
    close(f"{name} lora vs merged", adapted(p, cfg, ids, lora=lora), mg.forward(merged, cfg, ids)[0])
    # Prompt tuning with the embeddings of real tokens = the model run on those tokens first.
    lead = torch.tensor([[11, 29, 40]] * ids.shape[0])
    both = torch.cat([lead, ids], dim=1)
    wte = p["transformer.wte.weight"] if gpt2 else p["model.embed_tokens.weight"]
    close(f"{name} prompt vs tokens", adapted(p, cfg, ids, prompt=wte[lead[0]]),
          mg.forward(p, cfg, both)[0][:, lead.shape[1]:])
    # Prefix = the keys and values the model computes for real tokens (row 0's, the same for
    # every row since the lead tokens are) = the model run on those tokens first.
    _, kvs = adapted(p, cfg, lead, want_kv=True)
    L, NKV, hd = kv_dims(cfg)
    P = lead.shape[1]
    view = torch.empty(P, 2 * L, NKV, hd, dtype=torch.float64)
    for l, (k, v) in enumerate(kvs):
        view[:, 2 * l] = k[0].permute(1, 0, 2)
        view[:, 2 * l + 1] = v[0].permute(1, 0, 2)
    close(f"{name} prefix vs tokens", adapted(p, cfg, ids, prefix=view.reshape(P, -1)),
          mg.forward(p, cfg, both)[0][:, P:])


def load_adapter(adapter_dir, cfg):
    """A PEFT adapter directory as keyword arguments of adapted(), under PEFT's semantics."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        ac = json.load(f)
    tensors = load_checkpoint(os.path.join(adapter_dir, "adapter_model.safetensors"))
    kind = ac["peft_type"]
    if kind in ("PREFIX_TUNING", "PROMPT_TUNING"):
        return {"prefix" if kind == "PREFIX_TUNING" else "prompt": tensors["prompt_embeddings"]}
    assert kind == "LORA", kind
    lora = {}
    for name in tensors:
        if not name.endswith(".lora_A.weight"):
            continue
        module = name[len("base_model.model."):-len(".lora_A.weight")]
        r = pattern_value(ac.get("rank_pattern") or {}, module, ac["r"])
        alpha = pattern_value(ac.get("alpha_pattern") or {}, module, ac["lora_alpha"])
        scaling = alpha / math.sqrt(r) if ac.get("use_rslora") else alpha / r
        lora[module] = (tensors[name], tensors[name.replace("lora_A", "lora_B")], scaling)
    return {"lora": lora}


def apply_main(argv):
    """apply --model DIR --adapter DIR --tokens 1,2,3: the logits (T, V) of one sequence with the
    adapter, as JSON {"logits": [[...]]} (a tunebench-exported adapter checked against PEFT's
    semantics; tests/runner/test_save_adaptations.cpp runs it when torch is installed)."""
    ap = argparse.ArgumentParser(prog="make_peft_goldens.py apply")
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--tokens", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    p = load_checkpoint(os.path.join(args.model, "model.safetensors"))
    ids = torch.tensor([[int(t) for t in args.tokens.split(",")]])
    logits = adapted(p, cfg, ids, **load_adapter(args.adapter, cfg))[0]
    print(json.dumps({"logits": logits.tolist()}))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "apply":
        return apply_main(sys.argv[2:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--goldens", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "goldens"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    ids = torch.tensor(TOKENS)
    cases, logits_out = [], {}
    for model, seed in (("gpt2-tiny", 1701), ("llama-tiny", 1702)):
        with open(os.path.join(args.goldens, model, "config.json")) as f:
            cfg = json.load(f)
        p = load_checkpoint(os.path.join(args.goldens, model, "model.safetensors"))
        gen = torch.Generator().manual_seed(seed)
        made = [("lora", lora_adapter(cfg, gen)), ("prefix", prefix_adapter(cfg, gen)),
                ("prompt", prompt_adapter(cfg, gen))]
        self_check(model, p, cfg, ids, made[0][1][2]["lora"])
        for kind, (config, tensors, how) in made:
            name = f"{model}-{kind}"
            d = os.path.join(args.out, name)
            os.makedirs(d, exist_ok=True)
            mg.write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors, {"format": "pt"})
            with open(os.path.join(d, "adapter_config.json"), "w") as f:
                f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
            logits_out[name] = adapted(p, cfg, ids, **how).float()
            cases.append({"name": name, "model": model, "adapter": name, "peft_type": config["peft_type"]})
        logits_out[f"{model}-base"] = mg.forward(p, cfg, ids)[0].float()
    mg.write_safetensors(os.path.join(args.out, "logits.safetensors"), logits_out, {"format": "pt"})
    mg.write_json(os.path.join(args.out, "goldens.json"), {
        "generator": "tests/reference/make_peft_goldens.py",
        "torch": torch.__version__,
        "reference": "float64 computation following PEFT's semantics, logits stored as F32 (B, T, V)",
        "input_ids": TOKENS,
        "cases": cases,
    })


if __name__ == "__main__":
    main()
