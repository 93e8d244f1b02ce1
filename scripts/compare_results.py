#!/usr/bin/env python3
"""Side-by-side task metrics of two models from the results.json files written by
`plm-train finetune` (e.g. a distilled student against its teacher), as the Markdown table of
docs/RESULTS.md, with each ratio and their mean.

Usage: scripts/compare_results.py TEACHER/results.json STUDENT/results.json [TEACHER_LABEL STUDENT_LABEL]"""
import json
import sys

from results_table import deployed


def deployed_key(m):
    """results.json key of the head deployed for an ontology."""
    if deployed(m) in m:
        return deployed(m)
    return next(k for k in m if k.startswith("nearest_neighbour"))


def metrics(r):
    """(name, value) of every compared metric, in table order."""
    out = []
    ec = r["ec"]
    key = deployed_key(ec)
    out.append((f"EC F1 ({'NN' if key != 'mlp' else 'MLP'}, deployed)", ec[key]["f1"]))
    for ont in ("go_mf", "go_bp", "go_cc"):
        key = deployed_key(r[ont])
        out.append((f"{ont} Fmax ({'NN' if key != 'mlp' else 'MLP'})", r[ont][key]["fmax"]))
    ppi = r["ppi"]
    out.append(("PPI D-SCRIPT AUPR", ppi["dscript_yeast"]["lm_mlp"]["aupr"]))
    out.append(("PPI D-SCRIPT AUROC", ppi["dscript_yeast"]["lm_mlp"]["auroc"]))
    for species, m in sorted(ppi["cross_species_from_yeast"].items()):
        out.append((f"PPI yeast->{species} AUPR", m["aupr"]))
    out.append(("PPI Guo 5-fold acc", ppi["guo_yeast_5fold"]["accuracy_mean"]))
    variants = r["binding"]["variants"]
    gnn = next(v for k, v in variants.items() if "GNN" in k)
    for ligand in sorted(gnn):
        out.append((f"binding {ligand} AUROC", gnn[ligand]["auroc"]))
    return out


def main(teacher_path, student_path, labels):
    teacher = dict(metrics(json.load(open(teacher_path))))
    student = metrics(json.load(open(student_path)))
    t_label, s_label = labels
    print(f"| metric | {t_label} | {s_label} | student / teacher |")
    print("|---|---|---|---|")
    ratios = []
    for name, s in student:
        t = teacher.get(name)
        if t is None:
            continue
        ratio = s / t if t else float("nan")
        ratios.append((ratio, name))
        print(f"| {name} | {t:.3f} | {s:.3f} | {ratio:.2f} |")
    mean = sum(r for r, _ in ratios) / len(ratios)
    low = min(ratios)
    print()
    print(f"Mean student/teacher ratio over these {len(ratios)} metrics: **{mean:.2f}**; "
          f"lowest {low[0]:.2f} ({low[1]}).")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:5] if len(sys.argv) == 5 else ("teacher", "student"))
