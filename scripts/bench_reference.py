#!/usr/bin/env python3
"""Residues per second of PyTorch transformers' EsmModel (SDPA attention) on a checkpoint
directory, mean-pooled last layer, with the same synthetic sequences as `model/examples/throughput.rs`.

One shape, PyTorch only (median of REPEATS timed calls after a warm-up):

    python scripts/bench_reference.py DIR BATCH LENGTH [REPEATS] [THREADS]

Side by side with plm-model: for every shape and round, the Rust example binary runs (as a
subprocess) and then PyTorch, alternately, so both see the same machine load; prints a
Markdown table of the medians over rounds and their ratio:

    python scripts/bench_reference.py --ours BINARY --shapes 1x100,8x300,32x300 \\
        [--rounds 3] [--repeats 5] [--threads 2] DIR
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from transformers import EsmModel
from transformers.utils import logging

AA = "ACDEFGHIKLMNPQRSTVWY"
VOCAB = {c: i for i, c in enumerate(["<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R",
                                     "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C", "X",
                                     "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"])}


def sequence(length, seed):
    """Same as `sequence` in model/examples/throughput.rs (distinct for every seed below 400)."""
    return "".join(AA[(i * 7 + seed * 13 + i // 3 + (seed // 20) * (i % 5)) % 20] for i in range(length))


def load(path):
    logging.set_verbosity_error()
    return EsmModel.from_pretrained(path, add_pooling_layer=False, attn_implementation="sdpa").eval()


def torch_rate(model, batch, length, repeats):
    ids = torch.tensor([[0] + [VOCAB[c] for c in sequence(length, s)] + [2] for s in range(batch)])
    mask = torch.ones_like(ids)

    def run():
        with torch.inference_mode():
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            return h[:, 1:-1].mean(1)

    run()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return batch * length / statistics.median(times)


def ours_rate(binary, path, batch, length, repeats, threads):
    out = subprocess.run([binary, path, str(batch), str(length), str(repeats), str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["residues_per_s"]


def compare(args):
    torch.set_num_threads(args.threads)
    model = load(args.dir)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    results = {s: ([], []) for s in shapes}
    for r in range(args.rounds):
        for batch, length in shapes:
            ours = ours_rate(args.ours, args.dir, batch, length, args.repeats, args.threads)
            ref = torch_rate(model, batch, length, args.repeats)
            results[(batch, length)][0].append(ours)
            results[(batch, length)][1].append(ref)
            print(f"round {r + 1}: {batch}x{length} ours {ours:.0f} torch {ref:.0f} ratio {ours / ref:.2f}",
                  file=sys.stderr, flush=True)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds × {args.repeats} calls, "
          f"medians; ratio range = per-round min–max")
    print("| batch × length | plm-model residues/s | PyTorch residues/s | ratio | ratio range |")
    print("|---|---|---|---|---|")
    for (batch, length), (ours, ref) in results.items():
        ratios = [o / t for o, t in zip(ours, ref)]
        o, t = statistics.median(ours), statistics.median(ref)
        print(f"| {batch} × {length} | {o:,.0f} | {t:,.0f} | {o / t:.2f} | {min(ratios):.2f}–{max(ratios):.2f} |")


def main():
    if "--ours" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("dir")
        ap.add_argument("--ours", required=True, help="path of the built throughput example")
        ap.add_argument("--shapes", default="1x100,1x300,1x1000,8x100,8x300,8x1000,32x100,32x300")
        ap.add_argument("--rounds", type=int, default=3)
        ap.add_argument("--repeats", type=int, default=5)
        ap.add_argument("--threads", type=int, default=2)
        compare(ap.parse_args())
        return
    path, batch, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)
    rate = torch_rate(load(path), batch, length, repeats)
    print(json.dumps({"impl": "transformers", "torch": torch.__version__, "batch": batch, "length": length,
                      "threads": torch.get_num_threads(), "residues_per_s": round(rate, 1)}))


if __name__ == "__main__":
    main()
