#!/usr/bin/env python3
"""Reference outputs of Hugging Face `transformers`' EsmForMaskedLM for the Rust parity tests.

Builds EsmForMaskedLM with random weights (every parameter perturbed, layer norms and biases
included, so a wrong name or a skipped op cannot pass), saves it as a Hugging Face checkpoint
(`save_pretrained`, plus ESM's vocab.txt), and writes `reference.safetensors` with, for each
sequence, one-by-one outputs (every hidden state, last hidden state, mean-pooled embedding,
logits, contact map) and, for the whole list, the padded batch outputs.

    python scripts/make_parity_fixtures.py tiny  model/tests/fixtures/esm_tiny
    python scripts/make_parity_fixtures.py 8M    model/tests/fixtures/generated/esm2_t6_8M
    python scripts/make_parity_fixtures.py 8M    DIR --hub-layout   # LayerNorm.weight/bias names
    python scripts/make_parity_fixtures.py wide  DIR                # 2,560-wide, one block
    python scripts/make_parity_fixtures.py 650M  DIR --hub-layout --checkpoint-only  # a snapshot
"""
import argparse
import json
import pathlib

import torch
from safetensors.torch import load_file, save_file
from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D",
         "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-",
         "<null_1>", "<mask>"]

# Real sequences of different lengths: a fragment, human ubiquitin (P0CG48, 76 aa), and two
# Swiss-Prot entries from the shared validation split (truncated for the tiny fixture).
SEQUENCES = [
    "MKTAYIAKQR",
    "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG",
    "MSQGLPAAGSVLQRSVAAPGNQPQPQPQQQSPEDDDRKVRRREKNRVAAQRSRKKQTQKADKLHEEYESLEQENTMLRREIGKLTEELKHLTEALKEHEKMCPLLLCPMNFVPVPPRPDPVAGCLPR",
    "MKYTRVLLKLSGEALMGSQGYGIDPEIVHSIAEDVAKVVASGTQLAIVVGGGNIFRGLKGSAAGMDRATADYVGMLATVMNAITLQDGLERAGVPTRVQTAIAMQEVAEPYIRRKAMRHLEKGRVVVFGAGCGNPFFTTDTTAALRAAEINADVVFKATKVDGVYDKDPAKHPDAVKHDHLSYQDVLSGELGVMDATAISLCKENNIPIVVFDLFEPGNIGKAVAGEPIGSRIGNPV",
]

CONFIGS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    "8M": dict(hidden_size=320, num_hidden_layers=6, num_attention_heads=20, intermediate_size=1280),
    "35M": dict(hidden_size=480, num_hidden_layers=12, num_attention_heads=20, intermediate_size=1920),
    "150M": dict(hidden_size=640, num_hidden_layers=30, num_attention_heads=20, intermediate_size=2560),
    "650M": dict(hidden_size=1280, num_hidden_layers=33, num_attention_heads=20, intermediate_size=5120),
    # ESM-2 3B's width (2,560) in one thin block: embeddings over pgvector's 2,000-dimension
    # index limit for `vector`, for the halfvec tests (tests/workflows/run.sh).
    "wide": dict(hidden_size=2560, num_hidden_layers=1, num_attention_heads=20, intermediate_size=256),
}


def build(size: str) -> EsmForMaskedLM:
    cfg = EsmConfig(vocab_size=33, pad_token_id=1, mask_token_id=32, max_position_embeddings=1026,
                    position_embedding_type="rotary", token_dropout=True, emb_layer_norm_before=False,
                    layer_norm_eps=1e-5, hidden_act="gelu", hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, **CONFIGS[size])
    cfg.architectures = ["EsmForMaskedLM"]
    torch.manual_seed(1234)
    model = EsmForMaskedLM(cfg, ).eval()
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "inv_freq" in name:
                continue
            scale = 0.1 if p.dim() < 2 else 0.05
            p.add_(torch.randn_like(p) * scale)
    return model


def outputs(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        contacts = model.predict_contacts(ids, mask)
        last = model.esm(input_ids=ids, attention_mask=mask).last_hidden_state
    return out, contacts, last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("size", choices=sorted(CONFIGS))
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--hub-layout", action="store_true",
                    help="rename LayerNorm gamma/beta to weight/bias as in the published hub checkpoints")
    ap.add_argument("--checkpoint-only", action="store_true",
                    help="write the random-weight checkpoint without the reference outputs")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = build(args.size)
    model.save_pretrained(args.out, safe_serialization=True)
    (args.out / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    weights = load_file(args.out / "model.safetensors")
    renamed = {}
    for k, v in weights.items():
        if k.endswith("inv_freq"):
            continue  # recomputed from the config on load
        if args.hub_layout:
            k = k.replace(".gamma", ".weight").replace(".beta", ".bias")
        renamed[k] = v.contiguous()
    save_file(renamed, args.out / "model.safetensors", metadata={"format": "pt"})
    if args.checkpoint_only:
        print(f"wrote {args.out} (checkpoint only)")
        return
    tok = EsmTokenizer(vocab_file=str(args.out / "vocab.txt"))
    seqs = SEQUENCES if args.size != "tiny" else [s[:120] for s in SEQUENCES]
    ref = {}
    for i, s in enumerate(seqs):
        enc = tok(s, return_tensors="pt")
        out, contacts, last = outputs(model, enc["input_ids"], enc["attention_mask"])
        for k, h in enumerate(out.hidden_states[:-1]):
            ref[f"seq{i}.hidden{k}"] = h[0]
        ref[f"seq{i}.hidden{len(out.hidden_states) - 1}"] = last[0]
        ref[f"seq{i}.mean"] = last[0, 1:-1].mean(0)
        ref[f"seq{i}.logits"] = out.logits[0]
        ref[f"seq{i}.contacts"] = contacts[0]
    enc = tok(seqs, return_tensors="pt", padding=True)
    out, contacts, last = outputs(model, enc["input_ids"], enc["attention_mask"])
    ref["batch.last"] = last
    ref["batch.logits"] = out.logits
    ref["batch.contacts"] = contacts
    ref["batch.mask"] = enc["attention_mask"].to(torch.float32)
    save_file({k: v.contiguous().float() for k, v in ref.items()}, args.out / "reference.safetensors")
    (args.out / "reference.json").write_text(json.dumps({
        "size": args.size, "sequences": seqs, "num_layers": model.config.num_hidden_layers,
        "hub_layout": args.hub_layout, "transformers": __import__("transformers").__version__,
        "torch": torch.__version__}, indent=2) + "\n")
    print(f"wrote {args.out} ({len(seqs)} sequences)")


if __name__ == "__main__":
    main()
