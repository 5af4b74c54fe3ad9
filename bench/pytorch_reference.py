#!/usr/bin/env python3
# The PyTorch side of the side-by-side performance table (issue 9): GPT-2-style models at two
# shapes, four cases, fp32 and bf16 autocast, measured in tokens/s. `tunebench profile` runs
# cases defined the same way, so the two columns of the table compare like with like.
#
# Shapes (GPT-2 style: learned positions, n_positions 1024, pre-LayerNorm, tanh-GELU MLP of
# width 4C, fused QKV, tied embeddings, no dropout, weights normal(0, 0.02), biases 0):
#   small: L6  C384 H6  V8192   T128 B8
#   124m:  L12 C768 H12 V50257  T64  B4
# Cases, per step, on a fixed random batch of B x T token ids:
#   full   every parameter trainable; LM loss (mean cross-entropy over all B*T next-token
#          targets, logits over the whole vocabulary) + backward + AdamW step.
#   lora   base frozen; LoRA rank 8, alpha 16 (scale alpha/r) on every layer's attention QKV
#          (c_attn) and attention output projection (attn c_proj), A ~ normal(0, 1/r), B = 0;
#          LM loss + backward + AdamW step on the LoRA parameters only.
#   head   frozen body run without autograd (torch.no_grad) up to the final LayerNorm; a new
#          Linear(C, 2) classifier on the last position's hidden state; cross-entropy on fixed
#          labels + backward + AdamW step on the classifier. No LM head matmul.
#   infer  torch.no_grad forward returning the logits of every position (B,T,V).
# AdamW: lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight_decay 0.1 on parameters with ndim >= 2
# and 0 on the rest, no gradient clipping; gradients reset with zero_grad(set_to_none=True).
# bf16 = forward and loss under torch.autocast('cpu', dtype=torch.bfloat16); master weights,
# gradients and optimizer state stay fp32. tokens/s = B*T*steps / wall seconds of the timed
# steps, after warm-up steps that are not timed.
# Threads: torch.set_num_threads(--threads, default all cores) for torch's OpenMP pool;
# OMP_WAIT_POLICY=PASSIVE unless the environment sets it (see below); OpenBLAS (fp32 matmuls
# of Debian's torch) keeps its own pool, sized by --blas-threads or OPENBLAS_NUM_THREADS.
#
# fp32 matmul: before the cases, one n x n x n fp32 torch.matmul (--matmul-size, default 1024;
# one untimed call, then the best of 3) gives PyTorch's own GFLOP/s, so bench/side_by_side.sh
# can refuse a comparison against a PyTorch whose matmuls run far below tunebench's on the same
# shape (the reference BLAS, a BLAS pool of the wrong size). --matmul-only stops after it.
# Dispatch: machine.blas_runtime records the BLAS that computes (the library torch's sgemm_
# resolves to, by dladdr: with libblas3 selected, OpenBLAS can still be mapped through
# liblapack.so.3 while the reference BLAS does the work) and, for OpenBLAS, its coretype and
# threads (threadpoolctl when installed, else openblas_get_corename through ctypes); machine.onednn what PyTorch's oneDNN (mkldnn)
# dispatched to (its verbose ISA line and the convolution kernel of a probe run in a child
# process with the same environment); machine.aten_cpu_capability the vector ISA of ATen's own
# kernels; machine.isa_cap the cap variables in force (null = unset) and --isa-cap's label.
#
# Usage: /usr/bin/python3 bench/pytorch_reference.py [--shapes small,124m]
#          [--cases full,lora,head,infer] [--precisions f32,bf16] [--steps N] [--warmup N]
#          [--threads N] [--blas-threads N] [--matmul-size N] [--matmul-only]
#          [--isa-cap LABEL] [--json FILE]
# Exits 0 with a message when torch is not installed: the comparison is optional.

import argparse
import ctypes
import json
import math
import os
import platform
import re
import subprocess
import sys
import time

SHAPES = {
    "small": {"L": 6, "C": 384, "NH": 6, "V": 8192, "T": 128, "B": 8},
    "124m": {"L": 12, "C": 768, "NH": 12, "V": 50257, "T": 64, "B": 4},
}
CASES = ["full", "lora", "head", "infer"]
PRECISIONS = ["f32", "bf16"]
N_POSITIONS = 1024
LORA_RANK = 8
LORA_ALPHA = 16
HEAD_CLASSES = 2
ADAMW = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}


def usage_error(message):
    print(f"pytorch_reference.py: {message}", file=sys.stderr)
    sys.exit(2)


def parse_list(text, allowed, what):
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if not items or bad:
        usage_error(f"--{what}: unknown {', '.join(bad) or '(empty)'}; "
                    f"choose from {','.join(allowed)}")
    return items


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch reference throughput of the tunebench "
                                 "profile cases (see the comment at the top of this file).")
    ap.add_argument("--shapes", default="small,124m")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per case")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per case first")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    ap.add_argument("--blas-threads", type=int,
                    help="OpenBLAS pool size (sets OPENBLAS_NUM_THREADS before torch loads); "
                         "default: the environment's, else OpenBLAS's own (all cores)")
    ap.add_argument("--matmul-size", type=int, default=1024,
                    help="n of the n x n x n fp32 matmul timed first (GFLOP/s in machine.matmul)")
    ap.add_argument("--matmul-only", action="store_true",
                    help="measure the fp32 matmul and the dispatch, run no case")
    ap.add_argument("--isa-cap", default="native",
                    help="label of the ISA cap the caller set (recorded in machine.isa_cap)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    args.shapes = parse_list(args.shapes, list(SHAPES), "shapes")
    args.cases = parse_list(args.cases, CASES, "cases")
    args.precisions = parse_list(args.precisions, PRECISIONS, "precisions")
    if (args.steps < 1 or args.warmup < 0 or args.threads < 1
            or (args.blas_threads is not None and args.blas_threads < 1)
            or args.matmul_size < 16):
        usage_error("--steps, --threads and --blas-threads must be >= 1, --warmup >= 0, "
                    "--matmul-size >= 16")
    return args


args = parse_args()
# libgomp reads OMP_WAIT_POLICY once, when torch loads it. Busy-waiting OpenMP workers fight
# OpenBLAS's own thread pool (and any other process) for the 2 cores: with the default policy
# the same case varied 3-10x between runs here; passive waiting gave repeatable figures.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if args.blas_threads is not None:
    # OpenBLAS sizes its pool once, when the library loads with torch.
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print(f"pytorch_reference.py: torch is not installed for {sys.executable}; nothing to "
          "measure (Debian's python3-torch runs with /usr/bin/python3).")
    sys.exit(0)


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x, mask):
        B, T, C = x.shape
        hd = C // self.NH
        q, k, v = (t.view(B, T, self.NH, hd).transpose(1, 2)
                   for t in self.c_attn(self.ln_1(x)).split(C, dim=2))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = torch.softmax(att.masked_fill(mask[:T, :T], float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, C, NH, V):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(N_POSITIONS, C)
        self.h = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        self.register_buffer("mask", torch.ones(N_POSITIONS, N_POSITIONS).triu(1).bool(),
                             persistent=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def hidden(self, ids):  # (B,T) -> (B,T,C) after the final LayerNorm
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x, self.mask)
        return self.ln_f(x)

    def forward(self, ids):  # (B,T) -> logits (B,T,V), tied embeddings
        return self.hidden(ids) @ self.wte.weight.t()


class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.A = nn.Parameter(torch.randn(r, base.in_features) / r)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale


def adamw(params):
    params = list(params)
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW["weight_decay"]},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])


def autocast(precision):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def make_case(case, shape, precision):
    """Builds the model for one case; returns (step function, trainable parameter count,
    total parameter count)."""
    s = SHAPES[shape]
    torch.manual_seed(0)
    model = GPT(s["L"], s["C"], s["NH"], s["V"])
    ids = torch.randint(0, s["V"], (s["B"], s["T"]))
    targets = torch.randint(0, s["V"], (s["B"], s["T"]))
    V = s["V"]

    if case == "infer":
        model.eval()
        model.requires_grad_(False)

        def step():
            with torch.no_grad(), autocast(precision):
                return model(ids)
        trainable = []
    elif case == "head":
        model.eval()
        model.requires_grad_(False)
        head = nn.Linear(s["C"], HEAD_CLASSES)
        labels = torch.randint(0, HEAD_CLASSES, (s["B"],))
        opt = adamw(head.parameters())

        def step():
            with torch.no_grad(), autocast(precision):
                last = model.hidden(ids)[:, -1, :]
            opt.zero_grad(set_to_none=True)
            with autocast(precision):
                loss = F.cross_entropy(head(last.float()).float(), labels)
            loss.backward()
            opt.step()
            return loss
        trainable = list(head.parameters())
    else:
        if case == "lora":
            model.requires_grad_(False)
            for block in model.h:
                block.c_attn = LoRALinear(block.c_attn, LORA_RANK, LORA_ALPHA)
                block.c_proj = LoRALinear(block.c_proj, LORA_RANK, LORA_ALPHA)
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = adamw(trainable)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast(precision):
                logits = model(ids)
                loss = F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1))
            loss.backward()
            opt.step()
            return loss
    in_model = {id(p) for p in model.parameters()}
    total = sum(p.numel() for p in model.parameters()) + sum(
        p.numel() for p in trainable if id(p) not in in_model)
    return step, sum(p.numel() for p in trainable), total


def run_case(case, shape, precision, steps, warmup):
    s = SHAPES[shape]
    step, trainable, total = make_case(case, shape, precision)
    for _ in range(warmup):
        step()
    step_seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        out = step()
        step_seconds.append(time.perf_counter() - t0)
    seconds = sum(step_seconds)
    tokens = s["B"] * s["T"] * steps
    row = {
        "name": f"{shape}/{case}/{precision}",
        "case": case,
        "shape": shape,
        "precision": precision,
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "steps": steps,
        "step_seconds": step_seconds,
        "warmup_steps": warmup,
        # The shape in tunebench profile's terms, so `tunebench profile --reference` can match
        # its cases to these rows.
        "arch": "gpt2",
        "L": s["L"],
        "C": s["C"],
        "NH": s["NH"],
        "V": s["V"],
        "B": s["B"],
        "T": s["T"],
        "params": total,
        "trainable_params": trainable,
    }
    if out.dim() == 0:
        row["final_loss"] = out.item()
    return row


def blas_library():
    # torch's build info says only "generic" BLAS; the library actually mapped is what the
    # Debian alternatives point at, so read it from the process's memory map.
    a = torch.randn(64, 64)
    a @ a
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower()}
        return sorted(os.path.realpath(p) for p in libs)
    except OSError:
        return []


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def sgemm_provider():
    """The library whose sgemm_ torch's fp32 matmuls call: sgemm_ looked up from libtorch_cpu
    (its dependencies in load order, as the dynamic linker bound it), then dladdr. Several
    BLAS can be mapped at once (libblas.so.3 from libblas3 and OpenBLAS's liblapack.so.3,
    which pulls in libopenblas): only this says which one computes."""
    try:
        with open("/proc/self/maps") as f:
            torch_cpu = next((line.split()[-1] for line in f if "libtorch_cpu.so" in line), None)
        if torch_cpu is None:
            return None
        fn = ctypes.CDLL(torch_cpu).sgemm_
        info = _DlInfo()
        libc = ctypes.CDLL("libc.so.6")
        libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        if libc.dladdr(ctypes.cast(fn, ctypes.c_void_p), ctypes.byref(info)) and info.dli_fname:
            return os.path.realpath(info.dli_fname.decode())
    except (OSError, AttributeError, StopIteration):
        pass
    return None


def blas_runtime(libs):
    """What the loaded BLAS dispatched to: library, implementation, OpenBLAS coretype, threads."""
    provider = sgemm_provider()
    if provider is not None and "/blas/libblas.so" in provider:
        return {"source": "dladdr(sgemm_)", "library": provider,
                "implementation": "reference (libblas3)", "version": None, "coretype": None,
                "threads": 1, "sgemm_from": provider}
    info = blas_pool(libs)
    info["sgemm_from"] = provider
    return info


def blas_pool(libs):
    try:
        import threadpoolctl
        for info in threadpoolctl.threadpool_info():
            if info.get("user_api") == "blas":
                return {"source": "threadpoolctl", "library": os.path.realpath(info["filepath"]),
                        "implementation": info.get("internal_api"),
                        "version": info.get("version"),
                        "coretype": info.get("architecture"),
                        "threads": info.get("num_threads")}
    except ImportError:
        pass
    # No threadpoolctl (or it found no BLAS): ask each mapped library for OpenBLAS's entry points.
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "openblas_get_corename"):
            lib.openblas_get_corename.restype = ctypes.c_char_p
            threads = None
            if hasattr(lib, "openblas_get_num_threads"):
                threads = lib.openblas_get_num_threads()
            return {"source": "ctypes", "library": path, "implementation": "openblas",
                    "version": None, "coretype": lib.openblas_get_corename().decode(),
                    "threads": threads}
    reference = any("/blas/libblas.so" in p for p in libs)
    return {"source": "/proc/self/maps", "library": libs[0] if libs else None,
            "implementation": "reference (libblas3)" if reference else None,
            "version": None, "coretype": None, "threads": 1 if reference else None}


# A child process with this process's environment runs a convolution that PyTorch hands to
# oneDNN, with oneDNN's verbose output on: its "isa:" line is the ISA oneDNN chose after any
# cap, and the kernel name (e.g. jit:avx512_core) what it dispatched.
ONEDNN_PROBE = """
import torch
torch.set_num_threads(1)
torch.nn.functional.conv2d(torch.randn(32, 16, 14, 14), torch.randn(16, 16, 3, 3))
"""


def onednn_dispatch():
    if not torch.backends.mkldnn.is_available():
        return {"available": False, "isa": None, "convolution_kernel": None}
    env = dict(os.environ, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    try:
        out = subprocess.run([sys.executable, "-c", ONEDNN_PROBE], env=env, capture_output=True,
                             text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"available": True, "isa": None, "convolution_kernel": None,
                "error": f"probe failed: {e}"}
    isa = re.search(r"^(?:onednn|dnnl)_verbose,info,cpu,isa:(.*)$", out, re.M)
    conv = re.search(r"^(?:onednn|dnnl)_verbose,exec,cpu,convolution,([^,]+),", out, re.M)
    version = re.search(r"^(?:onednn|dnnl)_verbose,info,oneDNN (v[^ ]+)", out, re.M)
    return {"available": True, "version": version.group(1) if version else None,
            "isa": isa.group(1).strip() if isa else None,
            "convolution_kernel": conv.group(1) if conv else None}


def aten_cpu_capability():
    # torch >= 2 has torch.backends.cpu.get_cpu_capability(); 1.13 prints it in its config.
    backends_cpu = getattr(torch.backends, "cpu", None)
    if backends_cpu is not None and hasattr(backends_cpu, "get_cpu_capability"):
        return backends_cpu.get_cpu_capability()
    m = re.search(r"CPU capability usage: (\S+)", torch.__config__.show())
    return m.group(1) if m else None


CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OPENBLAS_CORETYPE",
                 "OPENBLAS_L2_SIZE", "ATEN_CPU_CAPABILITY")


def matmul_gflops(n):
    """PyTorch's own fp32 n x n x n matmul: one untimed call, then the best of 3."""
    torch.manual_seed(0)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "gflop_per_s": 2.0 * n ** 3 / best / 1e9, "best_seconds": best, "reps": 3}


def machine_info(threads, isa_cap):
    libs = blas_library()
    cpu, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "torch_num_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "blas": libs,
        "blas_runtime": blas_runtime(libs),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "onednn": onednn_dispatch(),
        "aten_cpu_capability": aten_cpu_capability(),
        "isa_cap": {"requested": isa_cap,
                    "env": {k: os.environ.get(k) for k in CAP_VARIABLES}},
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                           "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                           "DNNL_MAX_CPU_ISA") if k in os.environ},
    }


def main():
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads, args.isa_cap)
    br, dn = machine["blas_runtime"], machine["onednn"]
    print(f"torch {machine['torch']}, {args.threads} threads, BLAS "
          f"{br['library'] or 'unknown'} ({br['implementation'] or 'unknown'}, coretype "
          f"{br['coretype'] or 'n/a'}, {br['threads'] or '?'} threads), oneDNN ISA "
          f"{dn['isa'] or 'unknown'}, ATen {machine['aten_cpu_capability'] or 'unknown'}, "
          f"cap {args.isa_cap}, CPU {machine['cpu']} ({' '.join(machine['cpu_flags'])})")
    machine["matmul"] = matmul_gflops(args.matmul_size)
    print(f"fp32 matmul {args.matmul_size}^3: {machine['matmul']['gflop_per_s']:.1f} GFLOP/s",
          flush=True)
    if args.matmul_only:
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"machine": machine, "cases": []}, f, indent=2)
                f.write("\n")
        return
    print(f"{'shape':6} {'case':6} {'prec':5} {'tokens/s':>10} {'seconds':>8} {'steps':>5}")
    rows = []
    for shape in args.shapes:
        for case in args.cases:
            for precision in args.precisions:
                row = run_case(case, shape, precision, args.steps, args.warmup)
                rows.append(row)
                print(f"{shape:6} {case:6} {precision:5} {row['tokens_per_s']:10.1f} "
                      f"{row['seconds']:8.2f} {row['steps']:5d}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "cases": rows}, f, indent=2)
            f.write("\n")


main()
