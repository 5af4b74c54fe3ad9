#!/usr/bin/env python3
# bench/reference_check.py without torch (issue 22, item 5): the judge on fixture figures, and
# the `judge` command on fixture JSON of both sides: a reference-BLAS PyTorch (the issue's
# 2.8 GFLOP/s) is refused with exit 2 and the fix, an OpenBLAS one at a fair fraction of the
# peak passes, a wrong OpenBLAS pool size is refused, and bad input is a one-line exit 2.
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "bench", "reference_check.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
import reference_check as rc  # noqa: E402

REFERENCE = {"library": "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3",
             "implementation": "reference (libblas3)", "coretype": None, "threads": 1,
             "libraries": ["/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"]}
OPENBLAS = {"library": "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so",
            "implementation": "openblas", "coretype": "Haswell", "threads": 2,
            "libraries": ["/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"]}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


# Figures of issue 22: 2.8 (reference BLAS) and 124.6 GFLOP/s (OpenBLAS), 1024^3, 2 threads.
ok, msg = rc.judge(2.8, 124.6, 1024, 2, REFERENCE)
check(not ok, "reference BLAS at 2.8 of 124.6 is refused")
check("reference BLAS (libblas3)" in msg and "bench/install_reference.sh" in msg
      and "44.5x below" in msg and "\n" not in msg, f"refusal names cause, ratio and fix: {msg}")
ok, msg = rc.judge(124.6, 180.0, 1024, 2, OPENBLAS)
check(ok and "0.69" in msg, f"OpenBLAS at 0.69 of the peak passes: {msg}")
ok, msg = rc.judge(0.26 * 200, 200.0, 1024, 2, OPENBLAS)
check(ok, "just above the threshold passes")
ok, msg = rc.judge(0.24 * 200, 200.0, 1024, 2, OPENBLAS)
check(not ok and "below 25%" in msg, f"OpenBLAS below the threshold is refused: {msg}")
ok, msg = rc.judge(100.0, 200.0, 1024, 2, dict(OPENBLAS, threads=1))
check(not ok and "OPENBLAS_NUM_THREADS=2" in msg, f"wrong pool size is refused: {msg}")
try:
    rc.judge(0.0, 200.0, 1024, 2, OPENBLAS)
    check(False, "zero GFLOP/s is an input error")
except rc.InputError:
    pass


def run(tmp, pytorch, tunebench):
    p, t = os.path.join(tmp, "p.json"), os.path.join(tmp, "t.json")
    with open(p, "w") as f:
        json.dump(pytorch, f)
    with open(t, "w") as f:
        json.dump(tunebench, f)
    return subprocess.run([sys.executable, SCRIPT, "judge", "--pytorch", p, "--tunebench", t,
                           "--json", os.path.join(tmp, "gate.json")],
                          capture_output=True, text=True)


def pytorch_json(gflops, blas, n=1024):
    b = {k: v for k, v in blas.items() if k != "libraries"}
    return {"machine": {"torch": "1.13.0a0", "threads": 2, "blas": blas["libraries"],
                        "blas_runtime": b, "matmul": {"n": n, "gflop_per_s": gflops}}, "cases": []}


def tunebench_json(gflops, n=1024):
    return {"machine": {"isa": "avx2", "threads": 2, "peak_matmul_size": n,
                        "peak_gflop_per_s": {"f32": gflops, "bf16": None}}}


with tempfile.TemporaryDirectory() as tmp:
    r = run(tmp, pytorch_json(2.8, REFERENCE), tunebench_json(124.6))
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 2 and len(lines) == 1 and "reference BLAS" in lines[0],
          f"judge CLI refuses with exit 2 and one line: rc {r.returncode}, {r.stderr!r}")
    with open(os.path.join(tmp, "gate.json")) as f:
        gate = json.load(f)
    check(gate["ok"] is False and abs(gate["ratio"] - 2.8 / 124.6) < 1e-9, "gate.json records the verdict")
    r = run(tmp, pytorch_json(124.6, OPENBLAS), tunebench_json(180.0))
    check(r.returncode == 0 and "fair reference" in r.stdout, f"judge CLI passes OpenBLAS: {r.stdout!r}")
    r = run(tmp, pytorch_json(124.6, OPENBLAS, n=2048), tunebench_json(180.0))
    check(r.returncode == 2 and "shapes differ" in r.stderr and len(r.stderr.strip().splitlines()) == 1,
          f"different shapes are an input error: {r.stderr!r}")
    r = run(tmp, {"machine": {}}, tunebench_json(180.0))
    check(r.returncode == 2 and "missing" in r.stderr, f"missing field is an input error: {r.stderr!r}")

print("test_reference_check:", "FAILED " + str(len(failures)) if failures else "ok")
sys.exit(1 if failures else 0)
