// Reference ids for the tokenizer golden test: encodes a UTF-8 text file with the
// JavaScript GPT-2 encoder of npm gpt-3-encoder@1.1.4 (installed by `make deps` into
// deps/npm/node_modules) and prints {"ids": [...]} on stdout.
//
//   node tests/reference/gpt2_encode.js tests/data/tokenizer/gpt2_fixture.txt \
//     > tests/data/tokenizer/gpt2_fixture.ids.json
//
// That encoder differs from GPT-2's encoder.py (Python `regex`), which tunebench follows,
// in ways the fixture text avoids (see tests/core/test_tokenizer.cpp): JS `\s` includes
// U+FEFF and lacks U+0085; its merge-rank table keys a pair by "left,right", so pairs of
// tokens made of commas could collide; and node's \p{L}/\p{N} follow a newer Unicode than
// tunebench's table (code points unassigned there are "other", not letters).
'use strict';
const fs = require('fs');
const path = require('path');

const pkg = path.join(__dirname, '..', '..', 'deps', 'npm', 'node_modules', 'gpt-3-encoder');
const version = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf-8')).version;
if (version !== '1.1.4') {
  console.error(`gpt2_encode.js: expected gpt-3-encoder 1.1.4, found ${version}`);
  process.exit(2);
}
const { encode } = require(pkg);

if (process.argv.length !== 3) {
  console.error('usage: node gpt2_encode.js TEXT_FILE');
  process.exit(2);
}
const text = fs.readFileSync(process.argv[2], 'utf-8');
process.stdout.write(JSON.stringify({ ids: encode(text) }) + '\n');
