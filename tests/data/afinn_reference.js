// Produces tests/data/afinn_reference.json: AFINN scores of fixed sentences computed by the
// real npm sentiment@5.0.2 package, the reference for tunebench's C++ AfinnScorer.
// Run from the repository root:  node tests/data/afinn_reference.js > tests/data/afinn_reference.json
const path = require('path');
const Sentiment = require(path.join(__dirname, '..', '..', 'deps', 'npm', 'node_modules', 'sentiment'));
const s = new Sentiment();
const sentences = [
  'Cats are stupid.',
  'Cats are totally amazing!',
  'This is not good at all.',
  "I don't like it, it isn't great",
  'Good case, Excellent value.',
  'The mic is great.',
  'You can not answer calls with the unit, never worked once!',
  'NAÏVE but LOVELY',
  'I love it 😍 👍 but 😩',
  'double  spaces\tand\ttabs   everywhere; bad,good.worse',
  'single\ttab good',
  '',
  '   ',
  'no sentiment words here',
  'won\'t help, wont hurt, cant stand, not bad',
  'Horrible, horrible service... would NOT recommend; worst ever!!!',
  'fed up with bad luck', // multi-word lexicon keys never match single tokens
  'line one is nice\nline two is awful',
];
const out = sentences.map((t) => {
  const r = s.analyze(t);
  return { text: t, score: r.score, comparative: r.comparative, tokens: r.tokens.length };
});
// Accuracy of the package's own rule (comparative >= 0 -> positive, test/benchmark/validate.js)
// on the 1,000 labelled sentences of each file (the trailing empty, null-class entry dropped).
const fixtures = path.join(__dirname, '..', '..', 'deps', 'npm', 'node_modules', 'sentiment', 'test', 'fixtures');
const accuracy = {};
for (const d of ['amazon', 'imdb', 'yelp']) {
  const set = require(path.join(fixtures, d + '.json')).filter((e) => e.class !== null);
  let pass = 0;
  for (const e of set) if ((s.analyze(e.text).comparative >= 0 ? 1 : 0) === e.class) pass++;
  accuracy[d] = { correct: pass, total: set.length };
}
process.stdout.write(JSON.stringify({ accuracy: accuracy, package: 'sentiment@' + require(path.join(__dirname, '..', '..', 'deps', 'npm', 'node_modules', 'sentiment', 'package.json')).version, cases: out }, null, 1) + '\n');
