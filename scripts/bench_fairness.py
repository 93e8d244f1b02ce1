#!/usr/bin/env python3
"""How long a one-sequence query waits while a bulk request runs, through SQL on the local
server: one session embeds N natural-length Swiss-Prot validation sequences in a single
`plm_embed(text[], 'plm-default')` call (as an `UPDATE ... FROM plm_embed(array)` or a sync
batch does), while a second session runs one-sequence `plm_embed` calls back to back (each on
a sequence not seen before, so never from the cache). Prints one JSON line: the bulk call's
time and the single calls' latencies (p50, max) during it, next to the same single calls on an
idle server.

    python scripts/bench_fairness.py [N] [CROP]      (connection from the PG* variables)
"""
import json
import os
import statistics
import sys
import threading
import time

import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from fasta_rows import records  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "pretrain",
                    "swissprot2014_valid.fasta.gz")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    crop = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    seqs = [s[:crop] for _, s in zip(range(n + 400), records(DATA))]
    bulk, singles = seqs[:n], seqs[n:]
    # A salt per run keeps every sequence out of the embedding cache of earlier runs.
    salt = "".join("ACDEFGHIKLMNPQRSTVWY"[int(c, 16)] for c in os.urandom(4).hex())
    bulk = [salt + s for s in bulk]
    singles = [salt + s for s in singles]

    def single(conn, seq):
        t = time.perf_counter()
        conn.execute("SELECT plm_embed(%s, 'plm-default'::name)", (seq,)).fetchone()
        return time.perf_counter() - t

    with psycopg.connect(autocommit=True) as conn:
        single(conn, "MKTAYIAKQR")  # the model is loaded
        idle = [single(conn, singles.pop()) for _ in range(20)]

    done = threading.Event()
    result = {}

    def run_bulk():
        with psycopg.connect(autocommit=True) as conn:
            t = time.perf_counter()
            conn.execute("SELECT count(*) FROM plm_embed(%s::text[], 'plm-default'::name)", (bulk,)).fetchone()
            result["bulk_s"] = time.perf_counter() - t
        done.set()

    thread = threading.Thread(target=run_bulk)
    thread.start()
    time.sleep(0.5)
    during = []
    with psycopg.connect(autocommit=True) as conn:
        while not done.is_set() and singles:
            during.append(single(conn, singles.pop()))
    thread.join()
    print(json.dumps({
        "bulk_sequences": n,
        "bulk_residues": sum(len(s) for s in bulk),
        "bulk_s": round(result["bulk_s"], 2),
        "idle_single_ms_p50": round(1000 * statistics.median(idle), 1),
        "single_calls_during_bulk": len(during),
        "during_single_ms_p50": round(1000 * statistics.median(during), 1) if during else None,
        "during_single_ms_max": round(1000 * max(during), 1) if during else None,
    }))


if __name__ == "__main__":
    main()
