#!/usr/bin/env python3
"""Prints the first N sequences of a FASTA file (.gz allowed) as COPY rows `k<TAB>sequence`
(k from 1), each cropped to CROP residues when given. Used by the benchmark and soak scripts.
Usage: scripts/fasta_rows.py FASTA N [CROP]"""
import gzip
import sys


def records(path):
    opener = gzip.open if path.endswith(".gz") else open
    seq = None
    with opener(path, "rt") as f:
        for line in f:
            if line.startswith(">"):
                if seq:
                    yield "".join(seq)
                seq = []
            elif seq is not None:
                seq.append(line.strip())
    if seq:
        yield "".join(seq)


def main(path, n, crop=None):
    for k, s in enumerate(records(path), 1):
        if k > n:
            break
        print(f"{k}\t{s[:crop] if crop else s}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
