#!/usr/bin/env python3
"""Turns the results.json written by `plm-train finetune` into the Markdown tables of
docs/RESULTS.md.  Usage: scripts/results_table.py MODEL_DIR/results.json > tables.md"""
import json
import sys


def f(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def deployed(m):
    return m.get("deployed", {}).get("head", "mlp")


def mark(m, key):
    chosen = deployed(m)
    return " \u2605" if key == chosen or (key.startswith("nearest") and chosen == "nearest_neighbour") else ""


STANDARD_RULE = "the head with the better validation metric is deployed"


def deployed_note(m, metric):
    d = m.get("deployed")
    if not d:
        return "Deployed: the MLP."
    v = m.get("validation_f1", d["validation"])
    order = ["mlp", "nearest_neighbour", "contrastive_nearest_neighbour"]
    scores = ", ".join(f"{k.replace('_', ' ').replace('mlp', 'MLP')} {f(v[k])}"
                       for k in sorted(v, key=lambda k: order.index(k) if k in order else len(order)))
    if d.get("rule", STANDARD_RULE) != STANDARD_RULE:
        return f"Deployed (\u2605): the {d['head'].replace('_', ' ')} head: {d['rule']} (validation {metric}: {scores})."
    return (f"Deployed (\u2605): the {d['head'].replace('_', ' ')} head, chosen on the validation split "
            f"({metric} {scores}).")


def main(path):
    r = json.load(open(path))
    out = []
    if "contacts" in r:
        c = r["contacts"]
        out += ["### Contact head", "",
                f"{c['protocol']}.", "",
                "| | long-range P@L/5 |", "|---|---|",
                f"| before fitting (untrained regression) | {f(c['precision_at_l5_long_range_before'])} |",
                f"| after fitting | {f(c['precision_at_l5_long_range_after'])} |", ""]
    if "ec" in r:
        e = r["ec"]
        out += ["### EC numbers (NEW-392)", "", f"{e['protocol']}; {e['labels']} EC numbers.", "",
                deployed_note(e, "F1"), "",
                "| model | precision | recall | F1 |", "|---|---|---|---|"]
        for key, name in [("mlp", "LM features + MLP"), ("nearest_neighbour", "LM features, nearest neighbour (k=1)"),
                          ("contrastive_nearest_neighbour", "contrastive projection of LM features, nearest neighbour (k=1)"),
                          ("composition_mlp", "amino-acid composition + MLP")]:
            m = e.get(key)
            if m is None:
                continue
            out.append(f"| {name}{mark(e, key)} | {f(m['precision'])} | {f(m['recall'])} | {f(m['f1'])} |")
        out += ["| CLEAN (published, trained on all Swiss-Prot) | 0.596 | 0.479 | 0.497 |", ""]
    go = [k for k in ("go_mf", "go_bp", "go_cc") if k in r]
    if go:
        out += ["### GO terms (protein-centric Fmax, sequence-identity split)", "", r[go[0]]["protocol"] + ".", "",
                "Deployed head per ontology (chosen on validation Fmax) marked with \u2605.", "",
                "| ontology | train / test proteins | labels | LM + MLP | nearest neighbour (k=10) | composition + MLP | naive frequency |",
                "|---|---|---|---|---|---|---|"]
        for k in go:
            g = r[k]
            out.append(f"| {k[3:].upper()} | {g['train_proteins']} / {g['test_proteins']} | {g['labels']} | {f(g['mlp']['fmax'])}{mark(g, 'mlp')} | "
                       f"{f(g['nearest_neighbour_k10']['fmax'])}{mark(g, 'nearest_neighbour')} | {f(g['composition_mlp']['fmax'])} | {f(g['naive_frequency']['fmax'])} |")
        out.append("")
    if "ppi" in r:
        p = r["ppi"]
        d = p["dscript_yeast"]
        out += ["### Protein–protein interaction", "", d["protocol"] + ".", "",
                "| test | model | pairs | AUPR | AUROC | accuracy |", "|---|---|---|---|---|---|"]
        for key, name in [("lm_mlp", "LM features, symmetric pair MLP (deployed)"), ("composition_mlp", "composition, same pair MLP")]:
            m = d[key]
            out.append(f"| D-SCRIPT yeast, unseen proteins | {name} | {m['pairs']} | {f(m['aupr'])} | {f(m['auroc'])} | {f(m['accuracy'])} |")
        for sp, m in p["cross_species_from_yeast"].items():
            out.append(f"| trained on yeast, tested on {sp} (MCAPS subset) | deployed | {m['pairs']} | {f(m['aupr'])} | {f(m['auroc'])} | {f(m['accuracy'])} |")
        g = p["guo_yeast_5fold"]
        out += ["", f"Guo yeast, 5-fold cross-validation over {g['pairs']} pairs: mean accuracy **{f(g['accuracy_mean'])}** "
                f"(folds: {', '.join(f(a) for a in g['fold_accuracy'])}); PIPR reports 0.9709.", ""]
    if "binding" in r:
        b = r["binding"]
        variants = b["variants"]
        ligands = sorted({k for v in variants.values() for k in v})
        out += ["### Binding sites (per residue)", "", b["protocol"] + ".", "",
                "AUROC / AUPR / MCC per ligand on the test files:", "",
                "| ligand | " + " | ".join(variants.keys()) + " |", "|---|" + "---|" * len(variants)]
        for lig in ligands:
            cells = []
            for v in variants.values():
                m = v.get(lig)
                cells.append("–" if m is None else f"{f(m.get('auroc'))} / {f(m.get('aupr'))} / {f(m.get('mcc'))}")
            out.append(f"| {lig} | " + " | ".join(cells) + " |")
        out.append("")
    if "homology" in r:
        out += homology_tables(r["homology"])
    if "interface_prior" in r:
        out += interface_prior_table(r["interface_prior"])
    print("\n".join(out))


def interface_prior_table(p):
    """The protein-interface prior of supplied structures (plm-train interface-prior)."""
    rows = [("binding GNN alone (native contact graph)", p["model"]),
            ("interface prior alone", p["prior"]),
            (f"**combined (α = {p['alpha']:.2f}, the default with a structure)**", p["combined"])]
    out = ["### The protein-interface prior of a supplied structure", "", p["protocol"] + ".", "",
           f"| {p['residues']:,} residues ({p['positives']:,} interface) | AUROC | AUPR |", "|---|---|---|"]
    for label, m in rows:
        out.append(f"| {label} | {f(m['auroc'])} | {f(m['aupr'])} |")
    out.append("")
    return out


def homology_tables(h):
    """Model head alone, homology transfer alone and their blend (plm-train homology)."""
    names = {"go_mf": "GO MF", "go_bp": "GO BP", "go_cc": "GO CC", "ec": "EC"}
    splits = {"identity_split": "identity split (< 30 % identity to the reference)",
              "new392_split": "NEW-392 (enzymes added to Swiss-Prot later)",
              "random_split": "random split (proteins the head never saw)"}
    out = ["### Homology transfer and the combined predictor (`plm_function` methods)", "",
           "Every figure comes through the served code path (`plm-train homology`). GO: protein-centric "
           "Fmax; EC: label-weighted F1 with thresholds chosen on validation. *model* is the head alone "
           "(`method => 'model'`), *homology* the reference-set transfer alone, *combined* their blend "
           "(the default; weight `α` on homology and hit sharpness fitted on the split's validation "
           "proteins); the baselines are measured by the same code on the same proteins: the naive "
           "term-frequency predictor and the labels of the best MMseqs2 (`easy-search`) hit, scored by "
           "its identity. Best of each row in bold.", "",
           "| task | split | test proteins (with hits) | naive | MMseqs2 nearest neighbour | model | homology | combined | α / sharpness |",
           "|---|---|---|---|---|---|---|---|---|"]
    for task in ("go_mf", "go_bp", "go_cc", "ec"):
        if task not in h:
            continue
        for split, label in splits.items():
            s = h[task].get(split)
            if not s:
                continue
            keys = ["naive", "mmseqs2_nearest_neighbour", "model", "homology", "combined"]
            vals = {k: s[k]["value"] for k in keys}
            best = max(vals.values())
            cells = [f"**{f(v)}**" if v == best else f(v) for v in vals.values()]
            b = s["blend"]
            out.append(f"| {names[task]} | {label} | {s['test_proteins']} ({s['test_proteins_with_hits']}) | "
                       + " | ".join(cells) + f" | {b['alpha']:.2f} / {b['sharpness']:g} |")
    out += ["", "Deployed blend per ontology (in `heads.json`): weight and hit sharpness fitted on the "
            "random split's validation proteins, the no-hit rule on the held-out split's (identity split "
            "or NEW-392).", ""]
    out += binary_tables(h)
    return out


def binary_row(label, s, items):
    """One row of AUROC / AUPR for the naive, nearest-neighbour, model, homology and combined scores."""
    keys = ["naive", "mmseqs2_nearest_neighbour", "model", "homology", "combined"]
    best = max(s[k]["auroc"] or 0 for k in keys)
    cells = []
    for k in keys:
        a = s[k]["auroc"] or 0
        text = f"{f(a)} / {f(s[k]['aupr'])}"
        cells.append(f"**{text}**" if a == best else text)
    return f"| {label} | {s[items]} ({s['with_homology']}) | " + " | ".join(cells) + " |"


def binary_tables(h):
    """Interaction and binding-site methods (plm-train homology --tasks ppi,binding)."""
    out = []
    if "ppi" in h:
        p = h["ppi"]
        b = p["blend"]
        out += ["### Interolog transfer and the combined interaction predictor (`plm_ppi` methods)", "",
                "AUROC / AUPR per set. *homology* is the interolog score (homologs of both proteins "
                "that are a known interacting pair in the reference, E ≤ 1e-3; product of their "
                "identity × coverage, sharpened), *combined* the noisy-OR `1 − (1−m)(1−α·h)` with "
                f"α = {b['alpha']:.2f} and sharpness {b['sharpness']:g} fitted on {p['blend_from']}; "
                "*MMseqs2 nearest neighbour*: the best MMseqs2 hit of each protein, scored by the product "
                "of identities when the two hits are a known pair. Naive: a constant. The column after "
                "the set counts test pairs (in brackets: those whose two proteins both have homologs "
                "in the reference).", "",
                "| set | pairs (with homologs) | naive | MMseqs2 nearest neighbour | model | homology | combined |",
                "|---|---|---|---|---|---|---|"]
        labels = {"unseen_proteins": "D-SCRIPT yeast, proteins the head never saw",
                  "random_split": "D-SCRIPT yeast, random pairs the head was not trained on",
                  "cross_species_fly": "fly (MCAPS), yeast reference",
                  "cross_species_human": "human (MCAPS), yeast reference"}
        for k, label in labels.items():
            if k in p:
                out.append(binary_row(label, p[k], "items"))
        out += ["", *[f"- {labels[k]}: {p[k]['description']}." for k in labels if k in p], ""]
    if "binding" in h:
        bnd = h["binding"]
        out += ["### Template transfer and the combined binding-site predictor (`plm_binding_sites` methods)", "",
                "AUROC / AUPR over residues, per ligand. *homology*: binding residues of the reference "
                "chains found by the aligner (E ≤ 1e-3) carried through the alignment, the identity-"
                "weighted share of aligned template residues that bind; *combined*: `α·h + (1−α)·m` on "
                "covered residues, the GNN alone elsewhere, α and sharpness per ligand fitted on the "
                "random split's validation chains; *MMseqs2 nearest neighbour*: the labels of the best "
                "MMseqs2 hit annotated for the ligand, through its alignment, scored by its identity. "
                "The column after the ligand counts test residues (covered by a template).", ""]
        for split, title in (("held_out_chains", "Held-out chains (each ligand's test file; reference = every training file)"),
                             ("random_split", "Random split (a third of each test file joins the reference)")):
            out += [f"{title}:", "",
                    "| ligand | residues (covered) | naive | MMseqs2 nearest neighbour | model | homology | combined | α / sharpness |",
                    "|---|---|---|---|---|---|---|---|"]
            for lig, e in bnd.items():
                if split in e:
                    bl = e["blend"]
                    out.append(binary_row(lig, e[split], "items") + f" {bl['alpha']:.2f} / {bl['sharpness']:g} |")
            out.append("")
    out += calibration_tables(h)
    return out


def ece_cell(c, method):
    """Expected calibration error before -> after calibration, or a dash when not measured."""
    m = c.get(method) if c else None
    if not m or m.get("ece_raw") is None:
        return "–"
    raw, calibrated = f(m["ece_raw"]), f(m["ece"])
    # The lower error in bold (compared as printed: equal figures are not marked).
    if calibrated < raw:
        calibrated = f"**{calibrated}**"
    elif raw < calibrated:
        raw = f"**{raw}**"
    return f"{raw} → {calibrated}"


def calibration_tables(h):
    """Expected calibration error of the interaction and binding scores, and one reliability diagram."""
    ppi_rows, binding_rows = [], []
    for k, label in (("unseen_proteins", "interaction: D-SCRIPT yeast, unseen proteins"),
                     ("random_split", "interaction: D-SCRIPT yeast, random pairs"),
                     ("cross_species_fly", "interaction: fly, yeast reference"),
                     ("cross_species_human", "interaction: human, yeast reference")):
        e = h.get("ppi", {}).get(k, {})
        if e.get("calibration"):
            ppi_rows.append((label, e["calibration"], e))
    for lig, e in h.get("binding", {}).items():
        c = e.get("held_out_chains", {}).get("calibration")
        if c:
            binding_rows.append((f"binding {lig}: held-out chains", c, e["held_out_chains"]))
    rows = ppi_rows + binding_rows
    if not rows:
        return []
    bins = rows[0][1]["bins"]
    out = ["### Calibration of the interaction and binding scores", "",
           "`plm_ppi` probabilities and `plm_binding_sites` scores of the model and of the blend go "
           "through a Platt map `σ(a·logit(s) + b)` per method, fitted on the blend's validation items "
           "(stored in `heads.json` with the blend) and kept only where one fitted on every other "
           "validation item lowers the calibration error of the items between. Each map is increasing, "
           "so rankings, AUROC and AUPR are those of the raw scores; a score then estimates the "
           "fraction of such items that are positive. "
           "Expected calibration error "
           f"({bins} equal-width bins) on the test items, "
           "raw → calibrated (the lower in bold); `method => 'homology'` returns the template vote as it is (0 means no "
           "template) and is not calibrated.", "",
           "| test set | model | combined (the default) |", "|---|---|---|"]
    for label, c, _ in rows:
        out.append(f"| {label} | {ece_cell(c, 'model')} | {ece_cell(c, 'combined')} |")
    label, c, _ = max(ppi_rows or binding_rows, key=lambda r: r[2]["items"])
    out += ["", f"Reliability of the calibrated combined score, {label}:", "",
            "| score bin | items | mean score | observed rate |", "|---|---|---|---|"]
    for b in c["combined"]["reliability"]:
        out.append(f"| {b['from']:.1f}–{b['from'] + 1 / bins:.1f} | {b['items']} | {f(b['mean_score'])} | {f(b['observed'])} |")
    out.append("")
    return out


if __name__ == "__main__":
    main(sys.argv[1])
