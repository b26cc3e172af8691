#!/usr/bin/env python3
"""bench.py — ftc against HF transformers + PEFT on the same GPU, workload by workload (the
driver behind bench/run.sh; bench/README.md says what is measured and how).

For each workload (bench/common.py) it runs, one after the other and each in its own
process under a timeout: bench/hf_peft.py (HF + PEFT), then ftc (write the token data,
`ftc compile bench/specs/<workload>.fbs`, `ftrun --no-save`). It prints a table (s/step,
tokens/s, MFU, peak GiB), appends one JSON line per (system, workload) to
bench/results/results.jsonl, and where $OUT is set keeps there, refreshed after every run,
bench-table.txt, bench-results.jsonl (this run's lines), bench-logs.tar.gz (every log and
ftrun's metrics) and, with --profile, bench-profile.txt (ftrun --profile: per-op times of the third of 3 ftrun
steps). A run that fails (out of memory, crash, timeout) becomes a "failed: reason" row.

This process imports no torch and touches no GPU itself.
"""
import argparse
import datetime
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import common  # noqa: E402

SYSTEMS = ["hf-peft", "ftc"]
GIB = 2.0 ** 30


def log(*a):
    print(*a, flush=True)


def sh_out(cmd, timeout=30):
    """stdout of a short command, or None."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_index():
    v = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return v if v.isdigit() else "0"


def nvidia_smi(field):
    out = sh_out(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits", "-i", gpu_index()])
    return out.splitlines()[0].strip() if out else None


def git_commit():
    h = sh_out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    if not h:
        return "unknown"
    dirty = sh_out(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    return h + ("+dirty" if dirty else "")


def run_cmd(cmd, log_path, timeout, env=None):
    """Runs cmd in its own process group, output appended to log_path. Returns
    (exit code or None on timeout, seconds). On timeout the group gets SIGTERM (ftrun then
    finishes its step and stops), then SIGKILL 20 s later."""
    with open(log_path, "ab") as f:
        f.write(("$ " + " ".join(shlex.quote(str(c)) for c in cmd) + "\n").encode())
        f.flush()
        t0 = time.monotonic()
        p = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            rc = None
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            except ProcessLookupError:
                pass
        dt = time.monotonic() - t0
        f.write((f"# exit {'timeout' if rc is None else rc} after {dt:.1f} s\n").encode())
    return rc, dt


def last_error(log_path, prefixes=("ftrun:", "ftc:", "Error", "error", "RuntimeError")):
    """The most telling line of a log: the last one starting with a known error prefix,
    else the last non-comment line."""
    try:
        lines = [l.strip() for l in open(log_path, errors="replace") if l.strip() and not l.startswith("# exit")]
    except OSError:
        return "no log"
    for l in reversed(lines):
        if l.startswith(prefixes) and "notice" not in l:
            return l[:300]
    return lines[-1][:300] if lines else "no output"


MATMUL_PEAK_PY = r"""
import torch
n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(5):
    a @ b
t = []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); a @ b; e.record(); torch.cuda.synchronize()
    t.append(s.elapsed_time(e))
t.sort()
print(2 * n ** 3 / (t[len(t) // 2] * 1e-3) / 1e12)
"""


def measure_matmul_peak():
    """The GPU's bf16 matmul ceiling as torch's cuBLAS reaches it (TFLOP/s), or None."""
    try:
        r = subprocess.run([sys.executable, "-c", MATMUL_PEAK_PY], capture_output=True, text=True, timeout=120)
        return float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError):
        return None


class Bench:
    def __init__(self, a):
        self.a = a
        self.t_start = time.monotonic()
        self.build = os.path.abspath(a.build)
        self.work = os.path.abspath(a.work or os.path.join(self.build, "bench-work"))
        self.results = os.path.abspath(a.results)
        self.out = os.environ.get("OUT") or None
        self.records = []
        self.logs = []  # (path, name in the tarball)
        self.profile_text = []

    # ---- setup ----

    def setup(self):
        a = self.a
        self.workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
        for w in self.workloads:
            if w not in common.WORKLOADS:
                sys.exit(f"bench: unknown workload '{w}' (known: {', '.join(common.WORKLOADS)})")
        self.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
        for s in self.systems:
            if s not in SYSTEMS:
                sys.exit(f"bench: unknown system '{s}' (known: {', '.join(SYSTEMS)})")
        if a.steps < 1 or a.warmup < 0:
            sys.exit("bench: --steps must be at least 1 and --warmup at least 0")
        bad = []
        for w in self.workloads:
            spec = os.path.join(HERE, "specs", w + ".fbs")
            if not os.path.isfile(spec):
                bad.append(f"{spec}: missing")
            else:
                bad += [f"{spec}: {p}" for p in common.check_spec(spec, common.WORKLOADS[w])]
        if bad:
            sys.exit("bench: the ftc specs disagree with bench/common.py:\n  " + "\n  ".join(bad))
        if "ftc" in self.systems:
            for exe in ("ftc", "ftrun"):
                if not os.access(os.path.join(self.build, exe), os.X_OK):
                    sys.exit(f"bench: {self.build}/{exe} is missing: build ftc there (cmake -S . -B {a.build} "
                             f"-DCMAKE_BUILD_TYPE=Release && cmake --build {a.build} -j) or pass --build DIR")
        if a.device == "cpu":
            self.device, self.target = "cpu", "cpu"
        else:
            self.device = nvidia_smi("name")
            if not self.device:
                sys.exit("bench: nvidia-smi names no GPU (use --device cpu only to check the scripts)")
            cap = nvidia_smi("compute_cap")
            self.target = a.target or (f"sm_{cap.replace('.', '')}" if cap else None)
            if not self.target:
                sys.exit("bench: nvidia-smi gives no compute capability: pass --target sm_XY")
        if a.peak_tflops:
            self.peak = a.peak_tflops * 1e12
        else:
            self.peak = common.peak_flops(self.device)
            if not self.peak:
                sys.exit(f"bench: no bf16 peak known for device '{self.device}' (bench/common.py GPU_PEAKS): "
                         f"pass --peak-tflops T")
        self.commit = a.commit or git_commit()
        self.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.makedirs(self.work, exist_ok=True)
        os.makedirs(os.path.dirname(self.results), exist_ok=True)
        if self.out:
            os.makedirs(self.out, exist_ok=True)
        self.cache = os.environ.get("FTC_CACHE_DIR") or os.path.join(self.build, "ftc-cache")
        self.measured = measure_matmul_peak() if a.device == "cuda" else None
        if self.measured:
            log(f"bench: measured bf16 matmul ceiling {self.measured:.0f} TFLOP/s (torch, 8192^3, random data, median)")
        log(f"bench: {self.device}, peak {self.peak / 1e12:.1f} TFLOP/s bf16, target {self.target}, commit "
            f"{self.commit}, {self.date}")
        log(f"bench: workloads {', '.join(self.workloads)}; systems {', '.join(self.systems)}; {a.warmup} warmup + "
            f"{a.steps} timed steps; timeout {a.timeout} s per run" + (f", budget {a.budget} s" if a.budget else ""))

    def time_left(self):
        """Seconds this run may still take (None: no budget)."""
        if not self.a.budget:
            return None
        return self.a.budget - (time.monotonic() - self.t_start)

    def run_timeout(self):
        left = self.time_left()
        return self.a.timeout if left is None else min(self.a.timeout, left - 15)

    # ---- records ----

    def record(self, workload, system, res):
        wl = common.WORKLOADS[workload]
        fpt = common.flops_per_token(wl)
        ok = res.get("status") == "ok"
        tps = res.get("tokens_per_s") if ok else None
        rec = {
            "date": self.date, "device": self.device, "commit": self.commit, "workload": workload,
            "system": system,
            "sec_per_step": res.get("sec_per_step") if ok else None,
            "tokens_per_s": tps,
            "peak_gib": res.get("peak_gib") if ok else None,
            "mfu": fpt * tps / self.peak if ok and tps else None,
            "status": res.get("status", "failed: no result"),
            "steps_timed": self.a.steps, "warmup_steps": self.a.warmup, "batch": wl["batch"], "seq": wl["seq"],
            "tokens_per_step": wl["batch"] * wl["seq"], "flops_per_token": fpt, "peak_tflops": self.peak / 1e12,
            "measured_matmul_tflops": round(self.measured, 1) if self.measured else None,
        }
        for k, v in res.items():
            if k not in rec and k not in ("system", "workload"):
                rec[k] = v
        for k in ("sec_per_step", "tokens_per_s", "peak_gib", "mfu", "max_allocated_gib"):
            if isinstance(rec.get(k), float):
                rec[k] = round(rec[k], 6 if k in ("mfu", "sec_per_step") else 3)
        self.records.append(rec)
        with open(self.results, "a") as f:
            f.write(json.dumps(rec) + "\n")
        log(self.row(rec))
        self.publish()
        return rec

    @staticmethod
    def row(r):
        def num(v, fmt, width):
            return format(format(v, fmt) if isinstance(v, (int, float)) else "-", f">{width}")
        mfu = f"{100 * r['mfu']:.1f}%" if isinstance(r.get("mfu"), float) else "-"
        st = "" if r["status"] == "ok" else r["status"]
        return (f"{r['workload']:<21} {r['system']:<8} {num(r['sec_per_step'], '.3f', 9)} "
                f"{num(r['tokens_per_s'], ',.0f', 10)} {mfu:>6} {num(r['peak_gib'], '.2f', 8)}  {st}").rstrip()

    def table(self):
        head = (f"ftc vs HF transformers + PEFT — {self.device}, commit {self.commit}, {self.date}\n"
                f"batch x seq per workload as listed in bench/common.py; {self.a.warmup} warmup + {self.a.steps} timed "
                f"steps; MFU = analytic model FLOPs/token x tokens/s / {self.peak / 1e12:.1f} TFLOP/s "
                f"(bench/README.md)"
                + (f"; measured bf16 matmul ceiling {self.measured:.0f} TFLOP/s" if self.measured else "") + "\n\n"
                f"{'workload':<21} {'system':<8} {'s/step':>9} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>8}  status\n")
        lines = [self.row(r) for r in self.records]
        by = {}
        for r in self.records:
            by.setdefault(r["workload"], {})[r["system"]] = r
        notes = []
        for w, d in by.items():
            h, f = d.get("hf-peft"), d.get("ftc")
            if h and f and h["status"] == "ok" and f["status"] == "ok":
                notes.append(f"{w}: ftc {h['sec_per_step'] / f['sec_per_step']:.2f}x HF+PEFT's speed, "
                             f"{f['peak_gib'] / h['peak_gib']:.2f}x its peak memory"
                             if h.get("peak_gib") and f.get("peak_gib") else
                             f"{w}: ftc {h['sec_per_step'] / f['sec_per_step']:.2f}x HF+PEFT's speed")
        for r in self.records:
            if r.get("precision"):
                notes.append(f"{r['workload']} {r['system']}: {r['precision']}")
        peaks = ("peak GiB: HF = torch.cuda.max_memory_reserved(); ftc = ftrun's device_mem_bytes (device memory "
                 "the process took beyond its CUDA context, from cudaMemGetInfo)")
        return head + "\n".join(lines) + "\n\n" + "\n".join(notes + [peaks]) + "\n"

    def publish(self):
        """Refreshes the files in $OUT (few and flat: the device tool fetches them)."""
        if not self.out:
            return
        with open(os.path.join(self.out, "bench-table.txt"), "w") as f:
            f.write(self.table())
        with open(os.path.join(self.out, "bench-results.jsonl"), "w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")
        with tarfile.open(os.path.join(self.out, "bench-logs.tar.gz"), "w:gz") as t:
            for path, name in self.logs:
                if os.path.isfile(path):
                    t.add(path, arcname=name)
        if self.profile_text:
            with open(os.path.join(self.out, "bench-profile.txt"), "w") as f:
                f.write("\n".join(self.profile_text) + "\n")

    def skip(self, workload, system):
        left = self.time_left()
        if left is not None and left < 60:
            self.record(workload, system, {"status": f"skipped: out of the time budget ({self.a.budget} s)"})
            return True
        return False

    # ---- the systems ----

    def run_hf(self, workload, wdir):
        res_path = os.path.join(wdir, "hf-peft.json")
        log_path = os.path.join(wdir, "hf-peft.log")
        self.logs.append((log_path, f"{workload}/hf-peft.log"))
        if os.path.exists(res_path):
            os.remove(res_path)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        timeout = self.run_timeout()
        cmd = [sys.executable, os.path.join(HERE, "hf_peft.py"), "--workload", workload, "--result", res_path,
               "--steps", self.a.steps, "--warmup", self.a.warmup, "--device", "cpu" if self.a.device == "cpu" else "cuda"]
        rc, dt = run_cmd(cmd, log_path, timeout, env)
        res = {}
        if os.path.exists(res_path):
            try:
                res = json.load(open(res_path))
            except ValueError:
                res = {}
        if rc is None:
            res["status"] = f"failed: timeout after {timeout:.0f} s"
        elif rc != 0 or res.get("status") != "ok":
            if not str(res.get("status", "")).startswith("failed"):
                res["status"] = f"failed: exit {rc}: {last_error(log_path)}"
        res["run_wall_s"] = round(dt, 1)
        return res

    def ftc_notes(self, wl):
        if wl["tuner"] == "lora":
            return "bf16 base and compute, LoRA weights, gradients and AdamW state in fp32, recompute auto under a memory budget below HF's peak"
        return "bf16 compute, fp32 master weights, gradients and AdamW state, recompute auto under a memory budget below HF's peak"

    def run_ftc(self, workload, wdir, profile=False):
        wl = common.WORKLOADS[workload]
        log_path = os.path.join(wdir, "ftc-profile.log" if profile else "ftc.log")
        self.logs.append((log_path, f"{workload}/{os.path.basename(log_path)}"))
        plan = os.path.join(wdir, "plan.bin")
        tok = os.path.join(wdir, "bench.tok")
        timeout = self.run_timeout()
        t0 = time.monotonic()
        res = {"precision": self.ftc_notes(wl)}
        steps = 3 if profile else self.a.warmup + self.a.steps
        if not os.path.exists(tok) or profile is False:
            rows = (self.a.warmup + self.a.steps) * wl["batch"]
            common.write_tok(tok, common.random_docs(rows, wl["seq"], wl["model"]["vocab"], seed=1))
        if not (profile and os.path.exists(plan)):
            env = dict(os.environ, FTC_CACHE_DIR=self.cache)
            spec = os.path.join(HERE, "specs", workload + ".fbs")
            rc, dt = run_cmd([os.path.join(self.build, "ftc"), "compile", spec, "-o", plan, "--target", self.target,
                              "-s", f"data.train={tok}"], log_path, timeout, env)
            res["compile_s"] = round(dt, 1)
            if rc is None:
                return dict(res, status=f"failed: ftc compile timed out after {timeout:.0f} s")
            if rc != 0:
                return dict(res, status=f"failed: ftc compile: {last_error(log_path)}")
        run_dir = os.path.join(wdir, "ftrun-profile" if profile else "ftrun")
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = [os.path.join(self.build, "ftrun"), plan, "--device", "cpu" if self.a.device == "cpu" else "cuda",
               "--steps", steps, "--data", tok, "--out", run_dir, "--no-save"]
        if profile:
            prof = os.path.join(wdir, "profile.tsv")
            if os.path.exists(prof):
                os.remove(prof)
            cmd += ["--profile", prof, "--quiet"]
        left = timeout - (time.monotonic() - t0)
        rc, dt = run_cmd(cmd, log_path, left)
        res["run_wall_s"] = round(dt, 1)
        metrics = os.path.join(run_dir, "metrics.jsonl")
        if not profile:
            self.logs.append((metrics, f"{workload}/ftrun-metrics.jsonl"))
        lines = []
        if os.path.exists(metrics):
            for l in open(metrics):
                try:
                    lines.append(json.loads(l))
                except ValueError:
                    pass
        if rc is None:
            return dict(res, status=f"failed: timeout after {timeout:.0f} s ({len(lines)} of {steps} steps done)")
        if rc != 0:
            return dict(res, status=f"failed: exit {rc}: {last_error(log_path)}")
        if profile:
            return dict(res, status="ok")
        timed = [m for m in lines if m.get("step", 0) > self.a.warmup]
        if len(timed) != self.a.steps:
            return dict(res, status=f"failed: metrics.jsonl has {len(lines)} steps, expected {steps}")
        sps = sum(m["step_s"] for m in timed) / len(timed)
        res.update(status="ok", sec_per_step=sps, tokens_per_s=wl["batch"] * wl["seq"] / sps,
                   step_times=[round(m["step_s"], 4) for m in timed],
                   loss_first=lines[0].get("loss"), loss_last=lines[-1].get("loss"),
                   arena_gib=round(lines[-1].get("arena_bytes", 0) / GIB, 3))
        mem = [m["device_mem_bytes"] for m in lines if "device_mem_bytes" in m]
        if mem:
            res["peak_gib"] = max(mem) / GIB
        own = [m["mfu"] for m in timed if "mfu" in m]
        if own:
            res["ftrun_graph_mfu"] = round(sum(own) / len(own), 5)
        for l in open(log_path, errors="replace"):
            if l.startswith("training:"):
                res["executor"] = l.strip()[:300]
        return res

    # ---- profile ----

    def profile(self):
        """ftrun --profile: the third step run node by node between CUDA events; its per-op
        summary (ms, share, achieved TFLOP/s and GB/s) goes to bench-profile.txt."""
        self.profile_text.append(f"# ftrun --profile: 3 steps, the third timed node by node (CUDA events, no graph); "
                                 f"{self.device}, commit {self.commit}")
        for w in self.workloads:
            left = self.time_left()
            if left is not None and left < 90:
                self.profile_text.append(f"\n## {w}: skipped, out of the time budget")
                continue
            wdir = os.path.join(self.work, w)
            os.makedirs(wdir, exist_ok=True)
            log(f"bench: profiling ftc {w}")
            res = self.run_ftc(w, wdir, profile=True)
            prof = os.path.join(wdir, "profile.tsv")
            if res["status"] != "ok" or not os.path.exists(prof):
                self.profile_text.append(f"\n## {w}: {res['status']}")
                continue
            self.logs.append((prof, f"{w}/ftrun-profile.tsv"))
            rows = [l.rstrip("\n").split("\t") for l in open(prof) if not l.startswith("#")]
            rows.sort(key=lambda r: -float(r[5]) if len(r) > 5 else 0)
            self.profile_text.append(f"\n## {w}: per op")
            self.profile_text += [l.rstrip() for l in open(prof) if l.startswith("#")]
            self.profile_text.append(f"## {w}: the 25 slowest nodes (phase, node, op, kernel, shape, ms, FLOP, bytes, name)")
            self.profile_text += ["\t".join(r) for r in rows[:25]]
            self.publish()

    # ---- main ----

    def run(self):
        self.setup()
        for w in self.workloads:
            wdir = os.path.join(self.work, w)
            shutil.rmtree(wdir, ignore_errors=True)
            os.makedirs(wdir)
            for s in self.systems:
                if self.skip(w, s):
                    continue
                used = nvidia_smi("memory.used") if self.a.device != "cpu" else None
                log(f"bench: {w} / {s} ...")
                res = self.run_hf(w, wdir) if s == "hf-peft" else self.run_ftc(w, wdir)
                if used is not None:
                    res["gpu_mem_used_before_mib"] = int(used) if used.isdigit() else used
                rec = self.record(w, s, res)
                if rec["status"] != "ok":  # the end of its log, for a first look
                    lp = os.path.join(wdir, "hf-peft.log" if s == "hf-peft" else "ftc.log")
                    if os.path.exists(lp):
                        for l in open(lp, errors="replace").read().splitlines()[-8:]:
                            log("    | " + l[:200])
        if self.a.profile:
            self.profile()
        log("\n" + self.table())
        self.publish()
        return 0 if all(r["status"] == "ok" for r in self.records) else 1


def main():
    ap = argparse.ArgumentParser(prog="bench/run.sh", description="ftc vs HF transformers + PEFT on one GPU")
    ap.add_argument("--workloads", default=",".join(common.DEFAULT_WORKLOADS),
                    help="comma-separated (default: %(default)s)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="folder with ftc and ftrun (default build)")
    ap.add_argument("--work", default=None, help="plans, token data, logs (default BUILD/bench-work)")
    ap.add_argument("--results", default=os.path.join(HERE, "results", "results.jsonl"))
    ap.add_argument("--timeout", type=float, default=480, help="seconds per run (default 480)")
    ap.add_argument("--budget", type=float, default=0,
                    help="seconds for the whole benchmark; runs that would start later are skipped (default: none)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for a device the table lacks")
    ap.add_argument("--target", default=None, help="ftc --target (default from nvidia-smi: sm_XY)")
    ap.add_argument("--commit", default=None, help="commit to record (default: git, +dirty if the tree is)")
    ap.add_argument("--profile", action="store_true", help="also run ftrun 3 steps with --profile per workload (per-op times of the third step)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu only checks the scripts (tiny workloads, with --peak-tflops)")
    a = ap.parse_args()
    return Bench(a).run()


if __name__ == "__main__":
    sys.exit(main())
