#!/usr/bin/env bash
# Checks that every build scripts/test.sh makes resolves each shared dependency with the same
# features, so that the dependency tree is compiled once (workspace-hack/README.md): the
# workspace tests, plm-serve, and the extension's test (pgrx test) and install builds. A
# difference means workspace-hack/Cargo.toml is stale: `cargo hakari generate` refreshes it.
# Reads `cargo tree` only (seconds; nothing is compiled).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
tree() { # NAME CARGO-TREE-ARGS...: "crate version [features]" lines of third-party crates
  local name="$1"
  shift
  cargo tree -q --locked --prefix none -f '{p} [{f}]' "$@" |
    sed 's/ (\*)$//; s/ (proc-macro)//' | grep -v "(${PWD}" | sort -u >"$out/$name"
}
tree "workspace tests" -e normal,build,dev -p plm-model -p plm-align -p plm-serve -p plm-fuzz \
  -p plm-train --features plm-train/mpi
tree "plm-serve" -e normal,build -p plm-serve
tree "extension tests" -e normal,build,dev -p pg_plm --no-default-features --features "pg15 pg_test"
tree "extension install" -e normal,build -p pg_plm --no-default-features --features pg15
python3 - "$out" <<'PY'
import collections, os, sys
builds = {}
for name in sorted(os.listdir(sys.argv[1])):
    features = collections.defaultdict(set)
    for line in filter(str.strip, open(os.path.join(sys.argv[1], name))):
        crate, version, feats = line.strip().split(" ", 2)
        features[f"{crate} {version}"].add(feats)
    builds[name] = features
differ = 0
for crate in sorted(set().union(*builds.values())):
    seen = {b: frozenset(f[crate]) for b, f in builds.items() if crate in f}
    if len(set(seen.values())) > 1:
        differ += 1
        print(f"{crate}: features differ between builds")
        for b, f in seen.items():
            print(f"    {b}: {' '.join(sorted(f))}")
if differ:
    sys.exit(f"{differ} crate(s) would be compiled more than once: run `cargo hakari generate` "
             "(cargo install cargo-hakari) and commit workspace-hack/Cargo.toml")
print(f"one feature set per dependency across {len(builds)} builds "
      f"({len(set().union(*builds.values()))} third-party crates)")
PY
