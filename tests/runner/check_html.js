// Browser test of the HTML report (registered with ctest as report.html_in_browser):
// builds a report from the hand-written records and profile under tests/runner/fixtures,
// loads it in headless Chromium (Debian `chromium`, installed by scripts/deps.sh) and checks
//   - the file references nothing outside itself (no URL, src=, script, stylesheet link);
//   - the DOM Chromium parsed holds every task table, every chart (<svg> with its id and
//     class, each with data marks), the failed runs as failed rows, the machine and
//     hardware sections;
//   - the Findings section opens the page: one list per question, each with at least one
//     sentence, and the soft prompt vs prefix table;
//   - every label a chart draws lies inside its <svg>: a copy of the page with a measuring
//     script appended (the report itself has none) is laid out at the screenshot's width and
//     each <text>'s box is compared with its <svg>'s;
//   - no request left the page: Chromium's NetLog has no request initiated by the page
//     (the browser's own background traffic is initiated by "not an origin"; DNS is mapped
//     to NOTFOUND so nothing could be fetched anyway). A control page with an external
//     image proves the detector sees page requests;
// and keeps a screenshot (report.png) in the output directory as the test's artefact.
// A missing chromium is a failure, never a skip.
//
// usage: node check_html.js TUNEBENCH_CLI SOURCE_DIR OUT_DIR
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const { pathToFileURL } = require('url');

const [cli, sourceDir, outDir] = process.argv.slice(2);
if (!cli || !sourceDir || !outDir) {
  console.error('usage: node check_html.js TUNEBENCH_CLI SOURCE_DIR OUT_DIR');
  process.exit(2);
}
const failures = [];
function check(ok, what) {
  if (!ok) failures.push(what);
}
function die(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}

const chromium = process.env.CHROMIUM || 'chromium';
const version = spawnSync(chromium, ['--version'], { encoding: 'utf8' });
if (version.error || version.status !== 0)
  die(`${chromium} is not installed or does not run (${version.error ? version.error.message : version.stderr.trim()}); ` +
      'install the Debian package `chromium` (scripts/deps.sh does)');

// ---- the report ---------------------------------------------------------------------
fs.rmSync(outDir, { recursive: true, force: true });
const results = path.join(outDir, 'results');
fs.mkdirSync(results, { recursive: true });
const fixtures = path.join(sourceDir, 'tests', 'runner', 'fixtures');
for (const shard of ['shard0', 'shard1'])
  for (const f of fs.readdirSync(path.join(fixtures, 'results', shard)))
    fs.copyFileSync(path.join(fixtures, 'results', shard, f), path.join(results, f));
fs.copyFileSync(path.join(fixtures, 'profile.json'), path.join(results, 'profile.json'));
// The copy of full on spam peaks at 170 MiB over a 130 MiB breakdown: a largest value just
// past a tick step (50 MiB), where the axis used to end at 150 and the peak's label was cut.
{
  const f = path.join(results, 'full__spam__seed0.json');
  const rec = JSON.parse(fs.readFileSync(f, 'utf8'));
  rec.train_info.peak_rss_bytes = 170 * 1024 * 1024;
  rec.train_info.memory.activations = 50 * 1024 * 1024;
  fs.writeFileSync(f, JSON.stringify(rec, null, 1));
}
const rep = spawnSync(cli, ['report', results], { encoding: 'utf8' });
if (rep.status !== 0) die(`tunebench report exited ${rep.status}: ${rep.stderr}`);
const htmlFile = path.join(results, 'report.html');
const html = fs.readFileSync(htmlFile, 'utf8');

// Anything that could make the page fetch: URLs (absolute or protocol-relative), src,
// scripts, stylesheets, CSS url()/@import, frames, and links other than in-page anchors.
for (const re of [/https?:/i, /["'(=]\s*\/\//, /\bsrc\s*=/i, /<script/i, /<link/i, /url\(/i, /@import/i,
                  /<iframe/i, /<object/i, /<embed/i, /\bhref\s*=\s*"(?!#)/i])
  check(!re.test(html), `report.html matches ${re}`);

// ---- Chromium ------------------------------------------------------------------------
function chrome(args, netlog) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-chromium-'));
  const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage', `--user-data-dir=${profile}`, '--host-resolver-rules=MAP * ~NOTFOUND'];
  if (netlog) flags.push(`--log-net-log=${netlog}`);
  const r = spawnSync(chromium, flags.concat(args), { encoding: 'utf8', timeout: 180000, maxBuffer: 64 << 20 });
  fs.rmSync(profile, { recursive: true, force: true });
  if (r.error) die(`chromium failed: ${r.error.message}`);
  if (r.status !== 0) die(`chromium exited ${r.status}: ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

// Requests the page itself initiated, from a NetLog file.
function pageRequests(netlogFile) {
  const log = JSON.parse(fs.readFileSync(netlogFile, 'utf8'));
  const types = {};
  for (const [name, id] of Object.entries(log.constants.logEventTypes)) types[id] = name;
  const out = [];
  for (const e of log.events || []) {
    if (types[e.type] !== 'URL_REQUEST_START_JOB' || !e.params || !e.params.url) continue;
    if (e.params.initiator !== 'not an origin') out.push(`${e.params.url} (initiator ${e.params.initiator})`);
  }
  return out;
}

const url = pathToFileURL(htmlFile).href;
const netlog = path.join(outDir, 'netlog.json');
const dom = chrome(['--dump-dom', url], netlog);
fs.writeFileSync(path.join(outDir, 'dom.html'), dom);

const requests = pageRequests(netlog);
check(requests.length === 0, `the page made requests: ${requests.join(', ')}`);

const control = path.join(outDir, 'control.html');
fs.writeFileSync(control, '<!DOCTYPE html><html><body><img src="http://tunebench.invalid/x.png"></body></html>');
const controlLog = path.join(outDir, 'control-netlog.json');
chrome(['--dump-dom', pathToFileURL(control).href], controlLog);
check(pageRequests(controlLog).some((r) => r.includes('tunebench.invalid')),
      'the request detector did not see the control page\'s external image');

// ---- the DOM -------------------------------------------------------------------------
// The element with this id, from its opening tag to the matching close of the same tag.
function element(id) {
  const open = new RegExp(`<(\\w+)[^>]*\\bid="${id}"[^>]*>`).exec(dom);
  if (!open) return null;
  const tag = open[1];
  const end = dom.indexOf(`</${tag}>`, open.index);
  return end < 0 ? null : dom.slice(open.index, end + tag.length + 3);
}
function hasClass(el, cls) {
  const m = /class="([^"]*)"/.exec(el.slice(0, el.indexOf('>')));
  return !!m && m[1].split(/\s+/).includes(cls);
}

const tasks = ['sentiment-imdb', 'spam'];
for (const task of tasks) {
  const table = element(`table-${task}`);
  check(table && table.startsWith('<table') && hasClass(table, 'results'), `table#table-${task}.results`);
  if (table) check((table.match(/<tr class="(method-row|reference)/g) || []).length >= 6, `rows of table-${task}`);
  for (const [prefix, cls, mark] of [['pareto', 'chart-pareto', '<circle class="point'],
                                     ['memory', 'chart-stacked', '<rect class="bar"'],
                                     ['throughput', 'chart-bars', '<rect class="bar"'],
                                     ['loss', 'chart-loss', '<polyline class="series"']]) {
    const svg = element(`${prefix}-${task}`);
    check(svg && svg.startsWith('<svg') && hasClass(svg, 'chart') && hasClass(svg, cls), `svg#${prefix}-${task}.${cls}`);
    if (svg) check(svg.includes(mark), `data marks (${mark}) in svg#${prefix}-${task}`);
  }
  const pareto = element(`pareto-${task}`);
  if (pareto) check(pareto.includes('class="pareto-front"') && pareto.includes('on-front'), `Pareto front in pareto-${task}`);
}
check(/<tr class="method-row failed" data-method="prefix">[\s\S]*?>error</.test(dom), 'prefix on spam shown as failed (error)');
check(/<tr class="method-row failed" data-method="adapter">[\s\S]*?>diverged</.test(dom), 'adapter on spam shown as failed (diverged)');
check(dom.includes('ran out of scratch (P=64, T=256)'), 'the failed run\'s message');
check(element('machine') && element('machine').startsWith('<section'), 'section#machine');
check(element('hardware') && element('hardware').startsWith('<section'), 'section#hardware');
check(element('hardware-cases-0') && element('hardware-cases-0').startsWith('<table'), 'table#hardware-cases-0');
const peak = element('hardware-peak-0');
check(peak && peak.startsWith('<svg') && peak.includes('<rect class="bar"'), 'svg#hardware-peak-0 with bars');
check((dom.match(/<svg\b/g) || []).length === tasks.length * 4 + 1, 'exactly one svg per chart (4 per task + hardware)');

const findings = element('findings');
check(findings && findings.startsWith('<section') && findings.includes('<h2>Findings</h2>'), 'section#findings');
check(dom.indexOf('id="findings"') < dom.indexOf('class="task"'), 'the Findings come before the task sections');
for (const q of ['lora-vs-full', 'softprompt-vs-prefix', 'icl-vs-finetuning']) {
  const list = element(`findings-${q}`);
  check(list && list.startsWith('<ul') && list.includes('<li class="finding'), `ul#findings-${q} with findings`);
}
const side = element('softprompt-vs-prefix');
check(side && side.startsWith('<table') && side.includes('<tr class="prompt-row'), 'table#softprompt-vs-prefix with rows');

// ---- labels inside their charts ---------------------------------------------------------
const probe = path.join(outDir, 'probe.html');
const measure = `<script>
(function () {
  const out = [];
  let texts = 0;
  for (const svg of document.querySelectorAll('svg')) {
    const box = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll('text')) {
      ++texts;
      const r = t.getBoundingClientRect();
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)
        out.push(svg.id + ': "' + t.textContent + '" spans x ' + (r.left - box.left).toFixed(1) + '..' +
                 (r.right - box.left).toFixed(1) + ', y ' + (r.top - box.top).toFixed(1) + '..' + (r.bottom - box.top).toFixed(1) +
                 ' of ' + box.width.toFixed(1) + 'x' + box.height.toFixed(1));
    }
  }
  const pre = document.createElement('pre');
  pre.id = 'tb-overflow';
  pre.textContent = encodeURIComponent(JSON.stringify({ texts: texts, overflow: out }));
  document.body.appendChild(pre);
})();
</script>`;
fs.writeFileSync(probe, html.replace('</body>', measure + '</body>'));
const probeDom = chrome(['--dump-dom', '--window-size=1400,5600', pathToFileURL(probe).href]);
const measured = /<pre id="tb-overflow">([^<]*)<\/pre>/.exec(probeDom);
check(measured, 'the measuring script ran');
if (measured) {
  const m = JSON.parse(decodeURIComponent(measured[1]));
  check(m.texts > 50, `chart labels measured (${m.texts})`);
  for (const o of m.overflow) check(false, `label outside its chart: ${o}`);
}

// ---- the screenshot (the artefact) -----------------------------------------------------
const png = path.join(outDir, 'report.png');
chrome([`--screenshot=${png}`, '--window-size=1400,5600', '--hide-scrollbars', url]);
const bytes = fs.existsSync(png) ? fs.readFileSync(png) : Buffer.alloc(0);
check(bytes.length > 20000 && bytes.slice(1, 4).toString() === 'PNG', `screenshot ${png} (${bytes.length} bytes)`);

if (failures.length) {
  for (const f of failures) console.error('FAIL: ' + f);
  process.exit(1);
}
console.log(`PASS: ${htmlFile} in ${version.stdout.trim()}: findings, tables, ${tasks.length * 4 + 1} charts with ` +
            `every label inside, failed rows, no page request; screenshot ${png}`);
