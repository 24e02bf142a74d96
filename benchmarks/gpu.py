"""GPU figures in one prepared run: onnxruntime-gpu from carried wheels, training, and rows/s.

The device machine reaches no registry and gets only this repository, so everything it needs
travels in a git-ignored folder (``benchmarks/.gpu/``, made here by ``--prepare``): the wheels
of duckdb, sqlglot and onnxruntime-gpu (the last split into parts under 60 MB, one per
``run`` call, appended to one file on the device), and adult.parquet. The device's python3
already holds torch, pyarrow, numpy, pandas, onnx and scikit-learn.

Here (prepare the folder; run the whole measurement on the CPU provider, to test the script):

    .venv/bin/python benchmarks/gpu.py --prepare
    .venv/bin/python benchmarks/gpu.py --measure --provider cpu --out benchmarks/gpu-cpu.json

On the device, one ``run`` per wheel part (carry ``benchmarks/.gpu/partNN`` and nothing else
big), back to back, then the measurement (carry ``benchmarks/.gpu/base``):

    python3 benchmarks/gpu.py --append-part benchmarks/.gpu/part00      # ... part04
    python3 benchmarks/gpu.py --measure --provider cuda --out $OUT/gpu.json

The measurement writes one JSON file: device name, versions, whether ``CUDAExecutionProvider``
is what the session runs (read back from ``session.get_providers()``; if CUDA cannot be brought
up, exactly what failed), training seconds (torch on the device's CPU cores: the trainer has no
CUDA path yet), rows/s of the bare impute and synthesize graphs at 2,048 to 1,000,000 rows with
IO binding (inputs and outputs on the device, and with the copies), and rows/s of
``impute_latent_diffusion`` / ``synthesize_rows`` through SQL and of ``impute_batches`` /
``synthesize_batches``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / "benchmarks" / ".gpu"
WHEEL = Path("/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl")
SITE = Path("/tmp/ddf-site")
PART_BYTES = 60 * 2**20
BATCHES = (2_048, 16_384, 131_072, 1_000_000)


def prepare() -> None:
    """Download the wheels for the device (Python 3.12, x86-64) and split onnxruntime-gpu."""
    base = CARRY / "base"
    base.mkdir(parents=True, exist_ok=True)
    common = ["--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    common += ["--implementation", "cp", "--platform", "manylinux_2_28_x86_64"]
    common += ["--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
    pip = [sys.executable, "-m", "pip", "download", "-q", *common]
    subprocess.run([*pip, "-d", str(base), "duckdb==2.0.1", "sqlglot"], check=True)
    subprocess.run([*pip, "-d", str(CARRY), "onnxruntime-gpu==1.31.1"], check=True)
    shutil.copy(ROOT / ".." / "shared" / "data" / "adult.parquet", base / "adult.parquet")
    (wheel,) = CARRY.glob("onnxruntime_gpu-*.whl")
    data = wheel.read_bytes()
    for i, start in enumerate(range(0, len(data), PART_BYTES)):
        part = CARRY / f"part{i:02d}"
        part.mkdir(exist_ok=True)
        (part / "wheel.part").write_bytes(data[start : start + PART_BYTES])
    wheel.unlink()
    print(f"{CARRY}: base/ and {i + 1} parts of {len(data) / 2**20:.0f} MB")


def append_part(folder: Path) -> None:
    with open(WHEEL, "ab") as out:
        out.write((folder / "wheel.part").read_bytes())
    print(f"{WHEEL}: {WHEEL.stat().st_size / 2**20:.0f} MB")


def install(provider: str) -> dict:
    """Put the carried wheels on sys.path (a target folder: the device's own packages stay)."""
    wheels = sorted((CARRY / "base").glob("*.whl"))
    if provider == "cuda":
        wheels.append(WHEEL)
    if wheels and importlib_missing("duckdb"):
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(SITE)]
        done = subprocess.run([*pip, *map(str, wheels)], capture_output=True, text=True)
        if done.returncode != 0:
            return {"install_error": done.stderr[-2000:]}
    if SITE.is_dir():
        sys.path.insert(0, str(SITE))
    sys.path.insert(0, str(ROOT))
    return {}


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def device_info() -> dict:
    info = {"python": platform.python_version(), "machine": platform.node()}
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["gpu"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        info["gpu"] = f"nvidia-smi: {error}"
    return info


def _commit() -> str | None:
    """The checkout's commit (the device gets a copy of the working tree with .git)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def rate(rows: int, seconds: float) -> float:
    return round(rows / seconds, 1)


def bare_graphs(model, feeds_of, provider: str, batches) -> dict:
    """Rows/s of each graph at each batch size: device-resident (inputs copied once, outputs
    left on the device) and end to end (host inputs, host outputs), best of three."""
    import numpy as np
    import onnxruntime as ort

    device = "cuda" if provider == "cuda" else "cpu"
    out = {}
    for graph in ("impute", "synthesize"):
        session = model.session(graph)
        names = [i.name for i in session.get_inputs()]
        results = {}
        for rows in batches:
            feeds = {k: v for k, v in feeds_of(rows).items() if k in names}
            try:
                binding = session.io_binding()
                for name, array in feeds.items():
                    binding.bind_ortvalue_input(
                        name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device)
                    )
                for output in ("num_out", "cat_out"):
                    binding.bind_output(output, device)
                session.run_with_iobinding(binding)  # warm-up
                resident = []
                for _ in range(3):
                    tick = time.perf_counter()
                    session.run_with_iobinding(binding)
                    binding.synchronize_outputs()
                    resident.append(time.perf_counter() - tick)
                copied = []
                for _ in range(3):
                    tick = time.perf_counter()
                    session.run(["num_out", "cat_out"], feeds)
                    copied.append(time.perf_counter() - tick)
                results[rows] = {
                    "resident_rows_per_s": rate(rows, min(resident)),
                    "with_copies_rows_per_s": rate(rows, min(copied)),
                }
            except Exception as error:  # recorded: the figure that failed says why
                results[rows] = {"error": f"{type(error).__name__}: {error}"[:500]}
        out[graph] = results
    return out


def measure(args) -> dict:
    result = {
        "device": device_info(),
        "provider_asked": args.provider,
        "commit": _commit(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        **install(args.provider),
    }
    if "install_error" in result:
        return result
    if args.provider == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import duckdb
    import numpy as np
    import onnxruntime as ort

    import duckdb_diffusion as ddf
    from duckdb_diffusion import runtime

    if args.provider == "cpu":  # the CPU path of this script, as it runs on a CPU-only machine
        runtime.preferred_providers = lambda: ["CPUExecutionProvider"]
    result["versions"] = {
        "onnxruntime": ort.__version__,
        "duckdb": duckdb.__version__,
        "numpy": np.__version__,
        "available_providers": ort.get_available_providers(),
    }
    try:
        import torch

        result["versions"]["torch"] = torch.__version__
        result["torch_cuda"] = torch.cuda.is_available()
    except ImportError:
        result["torch_cuda"] = None

    data = CARRY / "base" / "adult.parquet"
    if not data.is_file():
        data = ROOT / ".." / "shared" / "data" / "adult.parquet"
    con = duckdb.connect()
    con.execute("CREATE TABLE adult AS SELECT * FROM read_parquet(?)", [str(data)])
    tick = time.perf_counter()
    summary = ddf.train(con, "adult", max_seconds=args.train_seconds, progress=False)
    result["training"] = {
        "seconds": round(time.perf_counter() - tick, 1),
        "budget": args.train_seconds,
        "stopped_by": summary["metrics"]["diffusion"].get("stopped_by"),
        "device": "cpu (the trainer has no CUDA path yet)",
        "cpu_cores": os.cpu_count(),
    }
    ddf.install(con)
    model = ddf.load_model(con, "adult")
    running = model.provider
    result["provider_running"] = running
    if args.provider == "cuda" and running != "CUDAExecutionProvider":
        result["cuda_error"] = "the session fell back to the CPU provider (see the log)"

    sample = con.sql("SELECT * FROM adult").to_arrow_table()
    encoded = model.encoder.encode(sample)
    width = model.width

    def feeds_of(rows: int) -> dict:
        take = np.arange(rows) % sample.num_rows
        return {
            "num": encoded.num[take],
            "cat": encoded.cat[take],
            "mask": encoded.mask[take],
            "noise": np.random.default_rng(0).standard_normal((rows, width), dtype=np.float32),
        }

    result["bare_graphs"] = bare_graphs(model, feeds_of, args.provider, args.batches)

    rows = args.rows
    copies = -(-rows // sample.num_rows)
    con.execute(f"CREATE TABLE big AS SELECT a.* FROM adult a, range({copies}) LIMIT {rows}")
    doors = {}
    for name, query in {
        "sql_impute": "CREATE OR REPLACE TABLE out AS SELECT * FROM impute_latent_diffusion("
        "'big', model := 'adult')",
        "sql_synthesize": f"CREATE OR REPLACE TABLE out AS SELECT * FROM synthesize_rows("
        f"'adult', {rows})",
    }.items():
        tick = time.perf_counter()
        con.execute(query)
        doors[name] = rate(rows, time.perf_counter() - tick)
    tick = time.perf_counter()
    count = sum(b.num_rows for b in ddf.impute_batches(con, "big", "adult", batch_rows=262_144))
    doors["python_impute_batches"] = rate(count, time.perf_counter() - tick)
    tick = time.perf_counter()
    count = sum(b.num_rows for b in ddf.synthesize_batches(con, "adult", rows, batch_rows=262_144))
    doors["python_synthesize_batches"] = rate(count, time.perf_counter() - tick)
    result["doors_rows_per_s"] = {"rows": rows, **doors}
    result["block_rows"] = dict(runtime.BLOCK_ROWS)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="fill benchmarks/.gpu (here)")
    parser.add_argument("--append-part", type=Path, help="append one carried wheel part")
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--provider", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows through the doors")
    parser.add_argument(
        "--batches",
        type=lambda text: [int(x) for x in text.split(",")],
        default=list(BATCHES),
        help="batch sizes for the bare graphs",
    )
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    args = parser.parse_args()
    if args.prepare:
        prepare()
    if args.append_part:
        append_part(args.append_part)
    if args.measure:
        result = measure(args)
        args.out.write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
