#!/usr/bin/env python3
"""Compare Outpost's CPU runtime with onnxruntime on the same machine, in one run.

For every selected model and every thread count (1 and 2 by default) the script:

* onnxruntime: starts a fresh Python process (``--ort-worker``) that preprocesses the
  model's test image with PIL/numpy, creates an ``InferenceSession`` (CPU provider,
  ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``, graph optimisation
  level ALL), times the session creation, the first inference, a warm-up, then the
  timed runs, and reports median / p90 plus the process's own peak RSS.
* Outpost: packages the model once with ``outpost-trainer package`` (signed with a key
  made by ``outpost-trainer keygen``), then runs ``outpost bench --json`` in a fresh
  process with ``OUTPOST_THREADS=threads``.

Each measurement is repeated ``--repeats`` times (ORT and Outpost interleaved, so slow
drift of the machine's load hits both alike); the report takes the median over the
repeats of every per-run median, and the maximum over the repeats of the peak RSS.

Only numpy, onnxruntime and pillow are needed besides the standard library.
Run ``python bench/compare_onnxruntime.py --help`` for the options; see bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
DEFAULT_SHARED = REPO_ROOT.parent / "shared"

# --------------------------------------------------------------------------------------
# The benchmarked models. Paths are relative to the shared fixtures directory.
# "preprocess" is exactly the manifest object of shared/DESIGN.md, so the same dict is
# written to P.json for `outpost-trainer package` and used by the ORT worker.
# "labels" is a file in shared/, or "labels_lines" are written to a temporary file.
# --------------------------------------------------------------------------------------
MODELS: dict[str, dict] = {
    "efficientnet_lite0": {
        "model": "models/efficientnet_lite0/model.onnx",
        "labels": "models/efficientnet_lite0/labels.txt",
        "task": "classification",
        "decoder": {"kind": "classification", "softmax": True, "top_k": 5},
        "preprocess": {
            "color": "RGB",
            "layout": "NCHW",
            "resize": {"mode": "short_side_center_crop", "short_side": 256, "width": 224, "height": 224},
            "mean": [127.0, 127.0, 127.0],
            "std": [128.0, 128.0, 128.0],
        },
        "image": "images/chelsea.jpg",
    },
    "yolov8_fall": {
        "model": "models/yolov8_fall/model.onnx",
        "labels": "models/yolov8_fall/labels.txt",
        "task": "detection",
        "decoder": {"kind": "yolov8", "score_threshold": 0.25, "nms_iou": 0.45, "class_aware": True},
        "preprocess": {
            "color": "RGB",
            "layout": "NCHW",
            "resize": {"mode": "letterbox", "width": 640, "height": 640, "pad_value": 114},
            "mean": [0.0, 0.0, 0.0],
            "std": [255.0, 255.0, 255.0],
        },
        "image": "images/astronaut.jpg",
    },
    "ppocr_det": {
        "model": "models/ppocr_v4/det.onnx",
        "labels_lines": ["text"],
        "task": "raw",
        "decoder": None,
        "preprocess": {
            "color": "RGB",
            "layout": "NCHW",
            "resize": {"mode": "stretch", "width": 640, "height": 640},
            "mean": [123.675, 116.28, 103.53],
            "std": [58.395, 57.12, 57.375],
        },
        "image": "images/text_lines.png",
    },
    "ppocr_rec": {
        "model": "models/ppocr_v4/rec.onnx",
        "labels_lines": ["text"],
        "task": "raw",
        "decoder": None,
        "preprocess": {
            "color": "RGB",
            "layout": "NCHW",
            "resize": {"mode": "stretch", "width": 320, "height": 48},
            "mean": [127.5, 127.5, 127.5],
            "std": [127.5, 127.5, 127.5],
        },
        "image": "images/text_lines.png",
    },
    "ppocr_cls": {
        "model": "models/ppocr_v4/cls.onnx",
        "labels_lines": ["0", "180"],
        "task": "classification",
        "decoder": {"kind": "classification", "softmax": False, "top_k": 2},
        "preprocess": {
            "color": "RGB",
            "layout": "NCHW",
            "resize": {"mode": "stretch", "width": 192, "height": 48},
            "mean": [127.5, 127.5, 127.5],
            "std": [127.5, 127.5, 127.5],
        },
        "image": "images/text_lines.png",
    },
}

MIN_RUNS = 10  # never fewer timed runs than this, whatever the time budget
MAX_MATCHED_RUNS = 1000  # cap on the ORT-matched run count handed to `outpost bench --runs`


def log(msg: str) -> None:
    """Progress goes to stderr so stdout holds only the report."""
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ======================================================================================
# onnxruntime worker: runs in its own process so that its peak RSS is its own.
# ======================================================================================

def preprocess_image(path: str, pp: dict):
    """Turn an image file into the model's input tensor, following the manifest's
    preprocess object (same arithmetic as shared/reference/make_reference.py)."""
    import numpy as np
    from PIL import Image

    im = Image.open(path).convert("RGB")
    rs = pp["resize"]
    mode, W, H = rs["mode"], int(rs["width"]), int(rs["height"])
    w, h = im.size
    if mode == "short_side_center_crop":
        s = rs["short_side"] / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = im.size
        left, top = (w - W) // 2, (h - H) // 2
        im = im.crop((left, top, left + W, top + H))
    elif mode == "letterbox":
        r = min(W / w, H / h)
        nw, nh = round(w * r), round(h * r)
        pad = int(rs.get("pad_value", 114))
        canvas = Image.new("RGB", (W, H), (pad, pad, pad))
        canvas.paste(im.resize((nw, nh), Image.BILINEAR), ((W - nw) // 2, (H - nh) // 2))
        im = canvas
    elif mode == "stretch":
        im = im.resize((W, H), Image.BILINEAR)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")

    a = np.asarray(im, dtype=np.float32)  # H x W x 3, RGB, 0..255
    if pp.get("color", "RGB") == "BGR":
        a = a[:, :, ::-1]
    a = (a - np.asarray(pp["mean"], np.float32)) / np.asarray(pp["std"], np.float32)
    if pp.get("layout", "NCHW") == "NCHW":
        a = a.transpose(2, 0, 1)
    return np.ascontiguousarray(a[None], dtype=np.float32)


def concrete_shape(model_shape, pp: dict):
    """Replace the model's dynamic dims (None or symbolic names) by the sizes the
    preprocess produces: batch 1, 3 channels, resize height/width."""
    H, W = int(pp["resize"]["height"]), int(pp["resize"]["width"])
    want = [1, 3, H, W] if pp.get("layout", "NCHW") == "NCHW" else [1, H, W, 3]
    if len(model_shape) != 4:
        raise ValueError(f"expected a 4-d image input, model has shape {model_shape}")
    out = []
    for dim, w in zip(model_shape, want):
        if isinstance(dim, int) and dim > 0:
            if dim != w:
                raise ValueError(f"model input shape {model_shape} does not fit preprocess size {want}")
            out.append(dim)
        else:
            out.append(w)
    return out


def ort_worker(spec: dict) -> dict:
    """One measurement of one model at one thread count. Returns a JSON-able dict."""
    import resource

    import numpy as np
    import onnxruntime as ort

    def maxrss_mb():
        # Linux reports ru_maxrss in KiB (macOS in bytes).
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0

    pp = spec["preprocess"]
    x = preprocess_image(spec["image"], pp)
    baseline_rss = maxrss_mb()  # interpreter + numpy + onnxruntime + PIL + input tensor

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(spec["threads"])
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    t0 = time.perf_counter()
    sess = ort.InferenceSession(spec["model"], sess_options=so, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3

    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"expected one input, model has {len(inputs)}")
    shape = concrete_shape(inputs[0].shape, pp)
    if list(x.shape) != shape:
        raise ValueError(f"preprocessed tensor {list(x.shape)} != model input {shape}")
    feed = {inputs[0].name: x}

    t0 = time.perf_counter()
    outs = sess.run(None, feed)
    first_ms = (time.perf_counter() - t0) * 1e3

    # Warm-up: a few runs, or ~10% of the time budget, whichever ends first.
    warm_deadline = time.perf_counter() + 0.1 * spec["seconds"]
    for i in range(spec["warmup"]):
        sess.run(None, feed)
        if i >= 1 and time.perf_counter() > warm_deadline:
            break

    # Timed runs: exactly `runs` if given, else until `seconds` elapsed (at least MIN_RUNS).
    times = []
    deadline = time.perf_counter() + spec["seconds"]
    while True:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
        n = len(times)
        if spec["runs"]:
            if n >= spec["runs"]:
                break
        elif n >= MIN_RUNS and time.perf_counter() >= deadline:
            break

    return {
        "load_ms": load_ms,
        "first_ms": first_ms,
        "threads": int(spec["threads"]),
        "runs": len(times),
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(np.mean(times)),
        "min_ms": float(np.min(times)),
        "input_shape": shape,
        "output_shapes": [list(o.shape) for o in outs],
        "baseline_rss_mb": baseline_rss,
        "peak_rss_mb": maxrss_mb(),
    }


def run_ort_once(name: str, cfg: dict, shared: Path, threads: int, args, model=None) -> dict:
    """Start a fresh interpreter running --ort-worker and parse its JSON answer
    (on `model`, default the shared FP32 model)."""
    spec = {
        "model": str(model or shared / cfg["model"]),
        "image": str(shared / cfg["image"]),
        "preprocess": cfg["preprocess"],
        "threads": threads,
        "runs": max(args.runs, MIN_RUNS) if args.runs else 0,
        "seconds": args.seconds,
        "warmup": args.warmup,
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ort-worker", json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"onnxruntime worker failed for {name} (threads={threads}):\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ======================================================================================
# Outpost side: keygen, package, bench.
# ======================================================================================

def run_checked(cmd, what: str, env=None, timeout=None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {p.returncode}):\n  $ {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}"
        )
    return p


def find_outpost_bins(bin_dir: Path) -> tuple[Path, Path]:
    runtime, trainer = bin_dir / "outpost", bin_dir / "outpost-trainer"
    missing = [str(b) for b in (runtime, trainer) if not (b.is_file() and os.access(b, os.X_OK))]
    if missing:
        sys.exit(
            "error: Outpost binaries not found: " + ", ".join(missing) + "\n"
            "  build them first:  cargo build --release -p outpost-runtime -p outpost-trainer\n"
            "  or point --outpost-bin-dir at them, or pass --ort-only to benchmark onnxruntime alone."
        )
    return runtime, trainer


def quantize_models(names, shared: Path, trainer: Path, work: Path, calibration: Path) -> dict[str, Path]:
    """`outpost-trainer quantize` of each model into its INT8 (QDQ) ONNX, calibrated
    on the images in `calibration`. Returns {name: int8 onnx}."""
    out = {}
    for name in names:
        cfg = MODELS[name]
        d = work / f"{name}-int8"
        d.mkdir()
        (d / "preprocess.json").write_text(json.dumps(cfg["preprocess"], indent=2))
        cmd = [trainer, "quantize", "--model", shared / cfg["model"], "--task", cfg["task"],
               "--preprocess", d / "preprocess.json", "--calibration", calibration,
               "--out", d / "model_int8.onnx"]
        if cfg.get("decoder"):
            (d / "decoder.json").write_text(json.dumps(cfg["decoder"], indent=2))
            cmd += ["--decoder", d / "decoder.json"]
        log(f"[outpost] quantizing {name} on {calibration}")
        run_checked(cmd, f"outpost-trainer quantize ({name})")
        out[name] = d / "model_int8.onnx"
    return out


def package_models(names, shared: Path, trainer: Path, work: Path,
                   extra: list[str], models=None) -> tuple[Path, dict[str, Path]]:
    """keygen once, then one signed .opk per model (the shared FP32 model, or the
    one in `models`). Returns (key dir, {name: opk})."""
    keydir = work / "key"
    run_checked([trainer, "keygen", "--out", keydir], "outpost-trainer keygen")
    opks = {}
    for name in names:
        cfg = MODELS[name]
        d = work / name
        d.mkdir()
        (d / "preprocess.json").write_text(json.dumps(cfg["preprocess"], indent=2))
        if "labels" in cfg:
            labels = shared / cfg["labels"]
        else:
            labels = d / "labels.txt"
            labels.write_text("\n".join(cfg["labels_lines"]) + "\n")
        model = (models or {}).get(name, shared / cfg["model"])
        cmd = [trainer, "package", "--model", model, "--labels", labels,
               "--task", cfg["task"], "--preprocess", d / "preprocess.json"]
        if cfg.get("decoder"):
            (d / "decoder.json").write_text(json.dumps(cfg["decoder"], indent=2))
            cmd += ["--decoder", d / "decoder.json"]
        opk = d / f"{name}.opk"
        cmd += ["--key", keydir, "--out", opk, *extra]
        log(f"[outpost] packaging {name}")
        run_checked(cmd, f"outpost-trainer package ({name})")
        opks[name] = opk
    return keydir, opks


def parse_bench_json(stdout: str) -> dict:
    """`outpost bench --json` prints one JSON object; tolerate stray lines around it."""
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        for line in reversed(stdout.strip().splitlines()):
            if line.lstrip().startswith("{"):
                return json.loads(line)
        raise


def run_outpost_once(name, opk, image, keydir, runtime, threads, runs, args) -> dict:
    env = dict(os.environ, OUTPOST_THREADS=str(threads))
    cmd = [runtime, "bench", opk, image, "--json", "--trusted-key", keydir / "public.key", "--runs", runs]
    p = run_checked(cmd, f"outpost bench ({name}, threads={threads})", env=env, timeout=args.timeout)
    return parse_bench_json(p.stdout)


PROFILE_TOP_OPS = 8


def profile_markdown(name, opk, image, keydir, runtime, threads, runs, args) -> str:
    """`outpost bench --profile`: where the model stage's time goes, per operator."""
    env = dict(os.environ, OUTPOST_THREADS=str(threads))
    cmd = [runtime, "bench", opk, image, "--json", "--profile", "--trusted-key",
           keydir / "public.key", "--runs", runs]
    p = run_checked(cmd, f"outpost bench --profile ({name}, threads={threads})", env=env,
                    timeout=args.timeout)
    prof = parse_bench_json(p.stdout)["profile"]
    lines = [f"**{name}**, {threads} thread(s): {prof['total_ms']:.2f} ms per run "
             f"(median of {prof['runs']}); node times summed per operator", "",
             "| operator | nodes | ms | share |", "| --- | ---: | ---: | ---: |"]
    for op in prof["by_op"][:PROFILE_TOP_OPS]:
        lines.append(f"| `{op['op']}` | {op['nodes']} | {op['ms']:.2f} | {op['share'] * 100:.1f}% |")
    rest = prof["by_op"][PROFILE_TOP_OPS:]
    if rest:
        lines.append(f"| {len(rest)} others | {sum(o['nodes'] for o in rest)} | "
                     f"{sum(o['ms'] for o in rest):.2f} | {sum(o['share'] for o in rest) * 100:.1f}% |")
    slow = ", ".join(f"`{n['node']}` ({n['op']}, {n['ms']:.2f} ms)" for n in prof["nodes"][:3])
    lines += ["", f"Slowest nodes: {slow}."]
    return "\n".join(lines)


# ======================================================================================
# Aggregation and report.
# ======================================================================================

def aggregate_ort(reps: list[dict]) -> dict:
    return {
        "median_ms": median([r["median_ms"] for r in reps]),
        "p90_ms": median([r["p90_ms"] for r in reps]),
        "load_ms": median([r["load_ms"] for r in reps]),
        "first_ms": median([r["first_ms"] for r in reps]),
        "runs_per_repeat": [r["runs"] for r in reps],
        "baseline_rss_mb": max(r["baseline_rss_mb"] for r in reps),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in reps),
        "repeats": reps,
    }


def _stage(rep: dict, stage: str, key: str = "median_ms"):
    return (rep.get("stages") or {}).get(stage, {}).get(key)


def aggregate_outpost(reps: list[dict]) -> dict:
    stages = {
        s: {"median_ms": median([_stage(r, s) for r in reps]), "p90_ms": median([_stage(r, s, "p90_ms") for r in reps])}
        for s in ("decode", "preprocess", "model", "postprocess")
    }
    totals = [r.get("total_median_ms") for r in reps]
    if all(t is None for t in totals):  # fall back to the sum of the stage medians
        totals = [sum(_stage(r, s) or 0.0 for s in stages) for r in reps]
    rss = [r.get("peak_rss_mb") for r in reps if r.get("peak_rss_mb") is not None]
    return {
        "model_median_ms": stages["model"]["median_ms"],
        "model_p90_ms": stages["model"]["p90_ms"],
        "stages": stages,
        "total_median_ms": median(totals),
        "load_ms": median([r.get("load_ms") for r in reps]),
        "first_ms": median([r.get("first_ms") for r in reps]),
        "peak_rss_mb": max(rss) if rss else None,
        "repeats": reps,
    }


def derive(ort: dict, op: dict | None) -> dict:
    """The comparison columns: ratios are Outpost / onnxruntime (below 1 = Outpost faster)."""
    if not op:
        return {}

    def ratio(a, b):
        return a / b if a is not None and b else None

    st = op["stages"]
    pre, post, model = st["preprocess"]["median_ms"], st["postprocess"]["median_ms"], st["model"]["median_ms"]
    overhead = ((pre or 0.0) + (post or 0.0)) / model * 100.0 if model else None
    return {
        "model_ratio": ratio(op["model_median_ms"], ort["median_ms"]),
        "load_ratio": ratio(op["load_ms"], ort["load_ms"]),
        "pre_post_overhead_pct": overhead,
    }


def fmt(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown_table(rows: list[dict]) -> str:
    head = ["model", "threads", "ORT median ms", "Outpost model median ms", "ratio (ours/ORT)",
            "Outpost total (decode+pre+model+post) ms", "pre+post overhead % of model",
            "ORT load ms", "Outpost load ms", "load ratio", "ORT peak RSS MB", "Outpost peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        o, op, d = r["ort"], r.get("outpost") or {}, r.get("derived") or {}
        cells = [r["model"], str(r["threads"]),
                 fmt(o["median_ms"]), fmt(op.get("model_median_ms")), fmt(d.get("model_ratio")),
                 fmt(op.get("total_median_ms")), fmt(d.get("pre_post_overhead_pct"), 1),
                 fmt(o["load_ms"], 1), fmt(op.get("load_ms"), 1), fmt(d.get("load_ratio")),
                 fmt(o["peak_rss_mb"], 1), fmt(op.get("peak_rss_mb"), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info(outpost_bin: Path | None) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime as ort
        ort_version = ort.__version__
    except ImportError:
        ort_version = None
    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "onnxruntime": ort_version,
        "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("OPENBLAS_", "OMP_", "OUTPOST_"))},
    }
    try:
        info["git_commit"] = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True).stdout.strip() or None
    except OSError:
        info["git_commit"] = None
    if outpost_bin is not None:
        try:
            p = subprocess.run([str(outpost_bin), "--version"], capture_output=True, text=True, timeout=30)
            info["outpost"] = p.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            info["outpost"] = None
    return info


def machine_header(info: dict) -> str:
    lines = [
        "# Outpost vs onnxruntime (CPU)",
        "",
        f"- date: {info['date']}",
        f"- CPU: {info['cpu']}; {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable)",
        f"- OS: {info['os']}; Python {info['python']}; onnxruntime {info['onnxruntime']}",
    ]
    if info.get("outpost"):
        lines.append(f"- outpost: {info['outpost']}")
    if info.get("git_commit"):
        lines.append(f"- git commit: {info['git_commit']}")
    if info.get("loadavg_at_start"):
        la = info["loadavg_at_start"]
        lines.append(f"- load average at start: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    if info.get("env"):
        lines.append("- env: " + " ".join(f"{k}={v}" for k, v in info["env"].items()))
    return "\n".join(lines)


# ======================================================================================
# Main.
# ======================================================================================

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated subset of: {', '.join(MODELS)} (default: all)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: 1,2)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="fresh processes per model and thread count, per runtime (default: 3)")
    ap.add_argument("--runs", type=int, default=None,
                    help=f"timed runs per process (min {MIN_RUNS}); default: ORT runs for --seconds and "
                         f"Outpost gets the number of runs ORT made in its first repeat (at most {MAX_MATCHED_RUNS})")
    ap.add_argument("--seconds", type=float, default=None,
                    help="ORT time budget for the timed runs when --runs is not given (default: 2)")
    ap.add_argument("--warmup", type=int, default=None, help="ORT warm-up runs after the first one (default: 5)")
    ap.add_argument("--quick", action="store_true",
                    help=f"fast smoke run: 1 repeat, {MIN_RUNS} runs, 2 warm-up runs "
                         "(flags given explicitly still win)")
    ap.add_argument("--ort-only", action="store_true", help="benchmark onnxruntime alone (no Outpost binaries needed)")
    ap.add_argument("--outpost-bin-dir", type=Path, default=REPO_ROOT / "target" / "release",
                    help="directory holding `outpost` and `outpost-trainer` (default: <repo>/target/release)")
    ap.add_argument("--shared-dir", type=Path, default=DEFAULT_SHARED,
                    help="shared fixtures directory (default: <repo>/../shared)")
    ap.add_argument("--json-out", type=Path, help="also write the raw and aggregated results as JSON here")
    ap.add_argument("--profile", action="store_true",
                    help="also print where Outpost's model time goes, per operator "
                         "(`outpost bench --profile`, at the first --threads count)")
    ap.add_argument("--no-precompiled", action="store_true",
                    help="package ONNX models only (no pre-optimised model.nnef.tar), to measure what it saves")
    ap.add_argument("--int8", action="store_true",
                    help="compare on INT8: each model quantised by `outpost-trainer quantize` (QDQ), "
                         "the same file run by both runtimes")
    ap.add_argument("--int8-calibration", type=Path, default=None,
                    help="calibration images for --int8 (default: <shared>/images)")
    ap.add_argument("--keep-work-dir", action="store_true", help="keep the temporary keys/packages and print where")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per child process (default: 900)")
    ap.add_argument("--ort-worker", metavar="SPEC_JSON", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)

    # Defaults, or --quick's defaults; options given explicitly win over both.
    defaults = dict(repeats=1, runs=MIN_RUNS, seconds=0.3, warmup=2) if args.quick else \
        dict(repeats=3, runs=0, seconds=2.0, warmup=5)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.model_list if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    args.thread_list = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.repeats < 1 or not args.thread_list or min(args.thread_list) < 1:
        ap.error("--repeats and --threads must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.ort_worker:  # child process: one ORT measurement, JSON on stdout
        print(json.dumps(ort_worker(json.loads(args.ort_worker))))
        return 0

    shared = args.shared_dir.resolve()
    for name in args.model_list:
        for key in ("model", "image", "labels"):
            if key in MODELS[name] and not (shared / MODELS[name][key]).is_file():
                sys.exit(f"error: missing fixture {shared / MODELS[name][key]} (see --shared-dir)")

    runtime = trainer = None
    if not args.ort_only:
        runtime, trainer = find_outpost_bins(args.outpost_bin_dir.resolve())

    info = machine_info(runtime)
    print(machine_header(info), flush=True)

    work = Path(tempfile.mkdtemp(prefix="outpost-vs-ort-"))
    rows = []
    profiles = []
    try:
        keydir, opks = (None, {})
        int8 = {}
        if args.int8:
            if args.ort_only:
                sys.exit("error: --int8 needs outpost-trainer to quantise the models")
            int8 = quantize_models(args.model_list, shared, trainer, work,
                                   (args.int8_calibration or shared / "images").resolve())
            print("- precision: INT8 (QDQ ONNX from `outpost-trainer quantize`, run by both)", flush=True)
        if not args.ort_only:
            # tract cannot write an INT8 model as NNEF: INT8 packages hold the ONNX only.
            no_pre = args.no_precompiled or args.int8
            keydir, opks = package_models(args.model_list, shared, trainer, work,
                                          ["--no-precompiled"] if no_pre else [], int8)

        for name in args.model_list:
            cfg = MODELS[name]
            for threads in args.thread_list:
                ort_reps, op_reps = [], []
                for rep in range(args.repeats):
                    # onnxruntime first, then Outpost, so both see the same machine state.
                    r = run_ort_once(name, cfg, shared, threads, args, int8.get(name))
                    ort_reps.append(r)
                    log(f"[ort]     {name} t={threads} rep {rep + 1}/{args.repeats}: "
                        f"median {r['median_ms']:.2f} ms over {r['runs']} runs, load {r['load_ms']:.1f} ms, "
                        f"peak RSS {r['peak_rss_mb']:.1f} MB")
                    if not args.ort_only:
                        # Same sample size as ORT unless --runs fixes it for both.
                        runs = max(args.runs, MIN_RUNS) if args.runs else \
                            min(max(ort_reps[0]["runs"], MIN_RUNS), MAX_MATCHED_RUNS)
                        o = run_outpost_once(name, opks[name], shared / cfg["image"], keydir, runtime,
                                             threads, runs, args)
                        op_reps.append(o)
                        log(f"[outpost] {name} t={threads} rep {rep + 1}/{args.repeats}: "
                            f"model median {fmt(_stage(o, 'model'))} ms over {runs} runs, "
                            f"load {fmt(o.get('load_ms'), 1)} ms, peak RSS {fmt(o.get('peak_rss_mb'), 1)} MB")
                ort_agg = aggregate_ort(ort_reps)
                op_agg = aggregate_outpost(op_reps) if op_reps else None
                rows.append({"model": name, "threads": threads, "task": cfg["task"],
                             "ort": ort_agg, "outpost": op_agg, "derived": derive(ort_agg, op_agg)})
        if args.profile and not args.ort_only:
            for name in args.model_list:
                profiles.append(profile_markdown(
                    name, opks[name], shared / MODELS[name]["image"], keydir, runtime,
                    args.thread_list[0], max(args.runs, MIN_RUNS), args))
    finally:
        if args.keep_work_dir:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    info["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print()
    print(markdown_table(rows))
    print()
    print(f"Medians over {args.repeats} fresh process(es) per cell; peak RSS is the max over them. "
          "Ratios are Outpost / onnxruntime (below 1 means Outpost is faster or smaller). "
          "ORT peak RSS includes the Python interpreter, numpy, PIL and onnxruntime "
          f"(about {max(r['ort']['baseline_rss_mb'] for r in rows):.0f} MB before the session is created).")
    for table in profiles:
        print()
        print(table)

    if args.json_out:
        config = {k: v for k, v in vars(args).items() if k not in ("ort_worker",)}
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()}
        payload = {"machine": info, "config": config,
                   "models": {n: MODELS[n] for n in args.model_list}, "results": rows}
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(payload, indent=2))
        log(f"raw results written to {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
