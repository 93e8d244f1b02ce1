#!/usr/bin/env python3
"""The pipeline a data team writes without pg_plm, for scripts/bench_sync.sh: read the rows
without an embedding with psycopg, embed them with PyTorch transformers' EsmModel (mean over
residues of the last layer, as plm_embed) in length-sorted batches under a token budget, and
COPY the vectors back through a staging table and one UPDATE. Prints one JSON line.

    python scripts/bench_pipeline.py MODEL_DIR TABLE [--threads 2] [--max-tokens 16384]
(connection from the PG* environment variables)
"""
import argparse
import json
import time

import psycopg
import torch
from transformers import EsmModel
from transformers.utils import logging

VOCAB = {c: i for i, c in enumerate(["<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R",
                                     "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C", "X",
                                     "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"])}


def batches(rows, max_tokens):
    """Length-sorted batches whose padded size stays under max_tokens."""
    batch = []
    for row in sorted(rows, key=lambda r: len(r[1])):
        width = len(row[1]) + 2
        if batch and width * (len(batch) + 1) > max_tokens:
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def embed(model, batch):
    width = max(len(s) for _, s in batch) + 2
    ids = torch.full((len(batch), width), VOCAB["<pad>"])
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (_, s) in enumerate(batch):
        ids[i, : len(s) + 2] = torch.tensor([0] + [VOCAB.get(c, 3) for c in s] + [2])
        mask[i, : len(s) + 2] = 1
    with torch.inference_mode():
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
    out = []
    for i, (key, s) in enumerate(batch):
        out.append((key, h[i, 1 : len(s) + 1].mean(0).tolist()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("table")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=16384)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.set_verbosity_error()
    t0 = time.perf_counter()
    model = EsmModel.from_pretrained(args.model_dir, add_pooling_layer=False).eval()
    load_s = time.perf_counter() - t0

    start = time.perf_counter()
    with psycopg.connect() as conn:
        rows = conn.execute(f"SELECT id, seq FROM {args.table} WHERE emb IS NULL").fetchall()
        embedded = []
        for batch in batches(rows, args.max_tokens):
            embedded.extend(embed(model, batch))
        conn.execute("CREATE TEMP TABLE staging (id int, emb text)")
        with conn.cursor().copy("COPY staging (id, emb) FROM STDIN") as copy:
            for key, vec in embedded:
                copy.write_row((key, "[" + ",".join(f"{v:.8g}" for v in vec) + "]"))
        conn.execute(f"UPDATE {args.table} p SET emb = s.emb::vector FROM staging s WHERE p.id = s.id")
    seconds = time.perf_counter() - start
    print(json.dumps({"rows": len(rows), "seconds": seconds, "rows_per_s": len(rows) / seconds,
                      "model_load_s": load_s, "torch": torch.__version__, "threads": args.threads}))


if __name__ == "__main__":
    main()
