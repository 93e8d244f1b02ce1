#!/usr/bin/env python3
"""The benchmark that counts: natural-length proteins embedded through SQL, side by side with
PyTorch and esm.cpp, in one run.

For each ESM-2 shape (random weights of the exact configs, scripts/make_parity_fixtures.py):
  - pg_plm: one `plm_embed(text[], model)` call per round on the local server
    (scripts/pg-local.sh), through the shared worker, embedding cache cleared first; at f32 and
    as the int8 and bf16 models made by `plm-train quantize` (their quality gates run on other
    sequences; on random weights a failed gate is reported and the model timed anyway);
  - PyTorch `transformers` EsmModel, SDPA attention, length-sorted batches under a padded
    token budget, inference mode;
  - esm.cpp (`pip install esm-cpp`) fp32 and int8 (`Model.quantize_weights()`),
    `forward_scheduled` (packed variable-length batches).
Every engine sees the same sequences (the first N of Swiss-Prot's validation split, cropped
to 1,022 residues) and the same thread count; rounds are interleaved and medians reported with
ratios. The max abs difference of the mean-pooled last layer against PyTorch is measured on
the first round's outputs (esm.cpp on its first 16 sequences, one at a time).

    ~/.cache/pg_plm/venv/bin/pip install --no-deps esm-cpp==0.2.1  # once; --no-deps keeps the venv's numpy
    eval "$(scripts/pg-local.sh env)"                         # psql reaches the local server
    ~/.cache/pg_plm/venv/bin/python scripts/bench_sql.py [--configs 8M,35M,150M]
        [--sequences 256] [--rounds 3] [--threads 2] [--work DIR]

Needs: the local server running with pg_plm (scripts/setup.sh), plm-train built
(target/release), the venv of scripts/install-deps.sh with esm-cpp. Prints Markdown.
"""
import argparse
import gzip
import importlib.util
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared/data/pretrain/swissprot2014_valid.fasta.gz"


def read_sequences(n, max_len=1022):
    seqs, cur = [], []
    with gzip.open(DATA, "rt") as f:
        for line in f:
            if line.startswith(">"):
                if cur:
                    seqs.append("".join(cur)[:max_len])
                    if len(seqs) == n:
                        break
                cur = []
            else:
                cur.append(line.strip())
    if cur and len(seqs) < n:
        seqs.append("".join(cur)[:max_len])
    return seqs


def fixtures():
    spec = importlib.util.spec_from_file_location("fixtures", ROOT / "scripts/make_parity_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_model(size, out):
    """Random-weight ESM-2 of `size` with hub tensor names and the per-layer rotary inv_freq
    buffers (which esm.cpp reads); pg_plm ignores them."""
    import torch
    from safetensors.torch import save_file

    if (out / "model.safetensors").exists():
        return
    fx = fixtures()
    model = fx.build(size)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "vocab.txt").write_text("\n".join(fx.VOCAB) + "\n")
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    tensors = {}
    for k, v in model.state_dict().items():
        if "inv_freq" in k:
            continue
        tensors[k.replace(".gamma", ".weight").replace(".beta", ".bias")] = v.clone().contiguous()
    for i in range(cfg.num_hidden_layers):
        tensors[f"esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq"] = inv_freq.clone()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})


def psql(sql):
    return subprocess.run(["psql", "-X", "-A", "-t", "-q", "-c", sql], check=True, capture_output=True,
                          text=True).stdout.strip()


class PgPlm:
    def __init__(self, model):
        import psycopg

        self.model = model
        self.conn = psycopg.connect(autocommit=True)

    def embed(self, seqs):
        self.conn.execute("SELECT plm_cache_clear()")
        rows = self.conn.execute(
            "SELECT ordinality, embedding FROM plm_embed(%s::text[], model => %s) ORDER BY 1",
            (seqs, self.model)).fetchall()
        return [r[1] for r in rows]


class Torch:
    def __init__(self, path, threads, max_tokens):
        import torch
        from transformers import EsmModel
        from transformers.utils import logging

        logging.set_verbosity_error()
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = EsmModel.from_pretrained(path, add_pooling_layer=False, attn_implementation="sdpa").eval()
        self.max_tokens = max_tokens
        self.vocab = {c: i for i, c in enumerate(fixtures().VOCAB)}

    def embed(self, seqs):
        torch = self.torch
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = [None] * len(seqs)
        batch = []

        def run(batch):
            width = max(len(seqs[i]) for i in batch) + 2
            ids = torch.full((len(batch), width), 1)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                s = seqs[i]
                ids[r, : len(s) + 2] = torch.tensor([0] + [self.vocab.get(c, 3) for c in s] + [2])
                mask[r, : len(s) + 2] = 1
            with torch.inference_mode():
                h = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            for r, i in enumerate(batch):
                out[i] = h[r, 1 : len(seqs[i]) + 1].mean(0).tolist()

        for i in order:
            width = len(seqs[i]) + 2
            if batch and width * (len(batch) + 1) > self.max_tokens:
                run(batch)
                batch = []
            batch.append(i)
        if batch:
            run(batch)
        return out


class EsmCpp:
    def __init__(self, path, int8):
        import esm_cpp
        import numpy as np

        self.np = np
        self.model = esm_cpp.Model.load(str(path / "model.safetensors"))
        if int8:
            self.model.quantize_weights()
        self.vocab = {c: i for i, c in enumerate(fixtures().VOCAB)}

    def ids(self, s):
        return self.np.array([0] + [self.vocab.get(c, 3) for c in s] + [2], dtype=self.np.int32)

    def embed(self, seqs):
        # Timed path: packed, length-bucketed forwards (returns logits; pooling is negligible).
        self.model.forward_scheduled([self.ids(s) for s in seqs])
        return None

    def pooled(self, seqs):
        out = []
        for s in seqs:
            _, hidden = self.model.forward_with_hidden_states(self.ids(s))
            out.append(self.np.asarray(hidden[-1])[1:-1].mean(0).tolist())
        return out


def max_abs_diff(a, b):
    return max(max(abs(x - y) for x, y in zip(u, v)) for u, v in zip(a, b))


def server_model_dir():
    """plm.model_dir, or its default beside the extension's files."""
    configured = psql("SHOW plm.model_dir")
    if configured:
        return pathlib.Path(configured)
    sharedir = subprocess.run(["pg_config", "--sharedir"], check=True, capture_output=True,
                              text=True).stdout.strip()
    return pathlib.Path(sharedir) / "extension/pg_plm_models"


def quantize(work, name, precision, sequences_for_gates):
    """`plm-train quantize --precision PRECISION` into the server's model directory; returns
    (model name, gate report)."""
    model_dir = server_model_dir()
    quantized = f"{name}-{precision}"
    dst = model_dir / quantized
    if dst.exists():
        shutil.rmtree(dst)
    fasta = work / "gates.fasta"
    fasta.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(sequences_for_gates)))
    exe = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/plm-train"
    run = subprocess.run([str(exe), "quantize", "--model", str(model_dir / name), "--to", str(dst),
                          "--precision", precision, "--data", str(fasta),
                          "--sequences", str(len(sequences_for_gates))],
                         capture_output=True, text=True)
    if run.returncode != 0:
        # Random weights make the gates a formality, not a judgement of quality: time the
        # arithmetic anyway, from a directory written here (not a path users get), and
        # say so in the report.
        failure = run.stderr.strip().splitlines()[0] if run.stderr else "failed"
        shutil.copytree(model_dir / name, dst)
        (dst / "manifest.json").write_text(json.dumps({"name": quantized, "precision": precision}))
        subprocess.run(["chmod", "-R", "a+rX", str(dst)], check=True)
        return quantized, f"not met on these random weights ({failure}); timed anyway"
    subprocess.run(["chmod", "-R", "a+rX", str(dst)], check=True)
    return quantized, json.loads(run.stdout)["gates"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="8M,35M,150M")
    ap.add_argument("--sequences", type=int, default=256)
    ap.add_argument("--gate-sequences", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path.home() / ".cache/pg_plm/bench/sql")
    args = ap.parse_args()
    os.environ.setdefault("ESM_NUM_THREADS", str(args.threads))
    os.environ.setdefault("CARGO_TARGET_DIR", str(pathlib.Path.home() / ".cache/pg_plm/target"))
    seqs = read_sequences(args.sequences)
    residues = sum(len(s) for s in seqs)
    gate_seqs = read_sequences(args.sequences + args.gate_sequences)[args.sequences:]
    model_dir = server_model_dir()
    print(f"{len(seqs)} sequences, {residues} residues (mean {residues / len(seqs):.0f}, "
          f"max {max(map(len, seqs))}); {args.threads} threads; {args.rounds} rounds\n", flush=True)
    results = {}
    installed = []
    try:
        run_configs(args, seqs, residues, gate_seqs, model_dir, results, installed)
    finally:
        # The server's model directory holds what users installed; leave it as found.
        for d in installed:
            shutil.rmtree(d, ignore_errors=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))


def run_configs(args, seqs, residues, gate_seqs, model_dir, results, installed):
    for size in args.configs.split(","):
        name = f"bench-esm2-{size.lower()}"
        src = args.work / name
        write_model(size, src)
        dst = model_dir / name
        if not dst.exists():
            shutil.copytree(src, dst)
            subprocess.run(["chmod", "-R", "a+rX", str(dst)], check=True)
        precisions = ["int8", "bf16"]
        installed += [dst] + [model_dir / f"{name}-{p}" for p in precisions]
        gates = {}
        engines = {
            "pg_plm f32 (SQL)": PgPlm(name),
            "PyTorch SDPA f32": Torch(src, args.threads, args.max_tokens),
            "esm.cpp f32": EsmCpp(src, False),
            "esm.cpp int8": EsmCpp(src, True),
        }
        for p in precisions:
            quantized, gates[p] = quantize(args.work, name, p, gate_seqs)
            engines[f"pg_plm {p} (SQL)"] = PgPlm(quantized)
        times = {k: [] for k in engines}
        outputs = {}
        for r in range(args.rounds):
            for label, engine in engines.items():
                t = time.perf_counter()
                out = engine.embed(seqs)
                times[label].append(time.perf_counter() - t)
                if r == 0:
                    outputs[label] = out
            print(f"  {size} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
                  file=sys.stderr, flush=True)
        ref = outputs["PyTorch SDPA f32"]
        diffs = {}
        for label, engine in engines.items():
            if label.startswith("pg_plm"):
                diffs[label] = max_abs_diff(outputs[label], ref)
            elif label.startswith("esm.cpp"):
                diffs[label] = max_abs_diff(engine.pooled(seqs[:16]), ref[:16])
        rate = {k: residues / statistics.median(v) for k, v in times.items()}
        results[size] = {"residues_per_s": rate, "max_abs_diff": diffs, "gates": gates}
        print(f"### {size} ({name})\n")
        print("| engine | residues/s | × PyTorch | × esm.cpp f32 | × esm.cpp int8 | max abs diff vs PyTorch |")
        print("|---|---:|---:|---:|---:|---:|")
        for k, v in rate.items():
            d = diffs.get(k)
            print(f"| {k} | {v:,.0f} | {v / rate['PyTorch SDPA f32']:.2f} | {v / rate['esm.cpp f32']:.2f} | "
                  f"{v / rate['esm.cpp int8']:.2f} | {'' if d is None else f'{d:.2e}'} |")
        for p, g in gates.items():
            print(f"\n{p} gates ({args.gate_sequences} other sequences): "
                  f"{json.dumps(g) if isinstance(g, dict) else g}", flush=True)
        print(flush=True)
        for e in engines.values():
            if isinstance(e, PgPlm):
                e.conn.close()


if __name__ == "__main__":
    main()
