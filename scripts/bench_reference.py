#!/usr/bin/env python3
"""Residues per second of PyTorch transformers' EsmModel on a checkpoint directory, mean-pooled
last layer, with the same synthetic sequences as `model/examples/throughput.rs`.

    python scripts/bench_reference.py DIR BATCH LENGTH [REPEATS] [THREADS]
"""
import json
import sys
import time

import torch
from transformers import EsmModel

AA = "ACDEFGHIKLMNPQRSTVWY"
VOCAB = {c: i for i, c in enumerate(["<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R",
                                     "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C", "X",
                                     "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"])}


def sequence(length, seed):
    return "".join(AA[(i * 7 + seed * 13 + i // 3) % 20] for i in range(length))


def main():
    path, batch, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)
    model = EsmModel.from_pretrained(path, add_pooling_layer=False).eval()
    ids = torch.tensor([[0] + [VOCAB[c] for c in sequence(length, s)] + [2] for s in range(batch)])
    mask = torch.ones_like(ids)

    def run():
        with torch.inference_mode():
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            return h[:, 1:-1].mean(1)

    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    secs = time.perf_counter() - start
    print(json.dumps({"impl": "transformers", "torch": torch.__version__, "batch": batch, "length": length,
                      "threads": torch.get_num_threads(), "residues_per_s": round(batch * length * repeats / secs, 1)}))


if __name__ == "__main__":
    main()
