import { accessSync, constants } from 'node:fs';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { toCurves, toTaskCurves, type Curve } from '../bench/aggregate.ts';
import { parseSweepConfig, type SweepConfig } from '../bench/config.ts';
import { expandCells } from '../bench/grid.ts';
import { baseManifest } from '../bench/manifest.ts';
import { planPlots, queryGridLayout, queryGridPng, RHO_LAYERS, renderSvg, rhoCurveSpec, rhoPlotRows, safeName, writePlots } from '../bench/plots.ts';
import { buildReportHtml, RunFolderError, writeReport } from '../bench/report.ts';
import type { CellResult } from '../bench/types.ts';
import { RunFiles } from '../bench/writers.ts';
import { rng } from '../models/seed.ts';
import { rejection } from './helpers.ts';

// ---- fixture: a small finished sweep, written by the real writers --------------------------------

const ACCURACY: Record<string, number> = { cnn: 0.941, 'svm-rbf': 0.947 };
const BASE_RHO: Record<string, number> = {
  'knockoff|same+probs': 0.2,
  'knockoff|same+label': 0.3,
  'distillation|same+probs': 0.18,
  'distillation|same+label': 0.35,
};
const FAILED = { target: 'cnn', attack: 'knockoff', side: 'same+label', budget: 1000, seed: 2 };
const NOT_APPLICABLE = { target: 'svm-rbf', attack: 'distillation', side: 'same+label', budget: 250, seed: 1 };
const EVIL_ERROR = 'student diverged: <script>alert("pwned")</script> & loss = NaN';

function fixtureConfig(): SweepConfig {
  return parseSweepConfig(
    {
      name: 'report-fixture',
      description: 'Two MNIST targets, two attacks, two side-information levels, three budgets, two seeds.',
      dataset: { name: 'mnist', trainSize: 10000, poolSize: 20000, evalSize: 2000, seed: 1 },
      targets: [
        { id: 'cnn', family: 'cnn', arch: 'cnn-small', trainSize: 10000, epochs: 3 },
        { id: 'svm-rbf', family: 'svm', trainSize: 5000, C: 5, gamma: 0.03 },
      ],
      attacks: ['knockoff', 'distillation'],
      students: [{ arch: 'cnn-small', epochs: 2, batchSize: 64, lr: 0.002 }],
      side: [
        { name: 'same+probs', pool: 'same', disclosure: 'probs', architecture: 'unknown' },
        { name: 'same+label', pool: 'same', disclosure: 'label', architecture: 'unknown' },
      ],
      budgets: [250, 1000, 3000],
      seeds: [1, 2],
    },
    'report fixture',
  );
}

const matches = (c: CellResult, m: typeof FAILED) =>
  c.target === m.target && c.attack === m.attack && c.side === m.side && c.budget === m.budget && c.seed === m.seed;

/** Plausible cells: ρ falls with the budget, seeds scatter it by a few points. */
function fixtureCells(cfg: SweepConfig): CellResult[] {
  return expandCells(cfg).map((cell) => {
    const noise = rng(cell.seed, `report-fixture:${cell.target}:${cell.attack}:${cell.side}:${cell.budget}`)() - 0.5;
    const rho = Math.min(1, Math.max(0, BASE_RHO[`${cell.attack}|${cell.side}`] * Math.sqrt(250 / cell.budget) + 0.04 * noise));
    const base = { ...cell, task: 'digits', targetAccuracy: ACCURACY[cell.target], queries: cell.budget, seconds: 0.5 + cell.budget / 1000, backend: 'wasm', gpu: false };
    const r: CellResult = { ...base, status: 'ok', rho, agreement: 1 - rho, studentAccuracy: ACCURACY[cell.target] - rho / 2 };
    if (matches(r, FAILED)) return { ...base, status: 'failed', rho: null, agreement: null, studentAccuracy: null, error: EVIL_ERROR };
    if (matches(r, NOT_APPLICABLE)) return { ...base, status: 'not-applicable', rho: null, agreement: null, studentAccuracy: null, error: 'distillation needs probabilities' };
    return r;
  });
}

/** Writes a run folder as a sweep does; `upTo` cells and status 'running' give an unfinished one. */
async function buildRunFolder(dir: string, opts: { status?: 'running' | 'finished'; upTo?: number } = {}) {
  const cfg = fixtureConfig();
  const all = fixtureCells(cfg);
  const cells = all.slice(0, opts.upTo ?? all.length);
  const files = new RunFiles(dir);
  await files.open();
  const manifest = baseManifest('report-fixture-1', cfg, { name: 'wasm', gpu: false, reason: 'test fixture' });
  manifest.targets = cfg.targets.map((t) => ({ id: t.id, family: t.family, testAccuracy: ACCURACY[t.id] }));
  for (const c of cells) await files.appendCell(c);
  if (opts.status !== 'running') {
    manifest.status = 'finished';
    manifest.finishedAt = new Date().toISOString();
    const count = (s: CellResult['status']) => cells.filter((c) => c.status === s).length;
    manifest.cells = { total: cells.length, ok: count('ok'), notApplicable: count('not-applicable'), failed: count('failed') };
    await files.writeAggregates(cells, { taskSets: cfg.taskSets });
  }
  await files.writeManifest(manifest);
  return { cfg, cells };
}

const tmpDirs: string[] = [];
async function tempRun(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rhobench-report-'));
  tmpDirs.push(dir);
  return dir;
}

/** How many times a Vega mark group with this name appears in an SVG (one per series for lines and areas). */
function markCount(svg: string, name: string): number {
  return svg.split(`role-mark ${name}_marks"`).length - 1;
}

/** The <path> elements inside the (single) group of a symbol mark: one per point. */
function symbolCount(svg: string, name: string): number {
  const group = svg.match(new RegExp(`class="mark-symbol role-mark ${name}_marks"[^>]*>(.*?)</g>`, 's'));
  return group ? (group[1].match(/<path/g) ?? []).length : 0;
}

// ---- plots ---------------------------------------------------------------------------------------

test('rhoCurveSpec: a series per attack × side, intervals from the seeds, points without ρ left out', () => {
  const cells = fixtureCells(fixtureConfig());
  const curves = toCurves(cells);
  const rows = rhoPlotRows(curves, 'cnn');
  assert.is(new Set(rows.map((r) => r.series)).size, 4);
  assert.is(rows.length, 12); // 4 series × 3 budgets, each with at least one seed's ρ
  assert.ok(rows.every((r) => !r.series.includes('cnn-small')), 'one student: not named in the series');

  // The band is the 95% t-interval over two seeds: mean ± t(1) · |ρ₁ − ρ₂| / 2.
  const at = cells.filter((c) => c.target === 'cnn' && c.attack === 'distillation' && c.side === 'same+probs' && c.budget === 1000);
  const [a, b] = at.map((c) => c.rho as number);
  const row = rows.find((r) => r.attack === 'distillation' && r.side === 'same+probs' && r.budget === 1000)!;
  assert.ok(Math.abs(row.rho - (a + b) / 2) < 1e-12);
  assert.ok(Math.abs(row.rhoHigh - ((a + b) / 2 + (12.706 * Math.abs(a - b)) / 2)) < 1e-9);
  assert.ok(row.rhoLow >= 0, 'the band is clipped at ρ = 0');
  // The point with the failed seed still has the other seed's ρ, and no interval.
  const single = rows.find((r) => r.attack === 'knockoff' && r.side === 'same+label' && r.budget === 1000)!;
  assert.is(single.seeds, 1);
  assert.is(single.rhoLow, single.rhoHigh);

  // A point with no ρ (every seed failed) is not plotted; a second student splits the series.
  const dead: Curve = { ...curves[0], student: 'mlp', points: curves[0].points.map((p, i) => (i === 1 ? { ...p, n: 0, rhoMean: null, rhoLow: null, rhoHigh: null, status: 'failed' } : p)) };
  const spec = rhoCurveSpec([...curves, dead], 'cnn');
  const values = (spec.data as { values: { series: string; budget: number; student: string }[] }).values;
  assert.is(new Set(values.map((v) => v.series)).size, 5);
  assert.ok(values.some((v) => v.series === 'knockoff · same+probs · mlp'));
  assert.equal(values.filter((v) => v.student === 'mlp').map((v) => v.budget), [250, 3000]);
  assert.match(JSON.stringify(spec.title), 'cnn (target accuracy 0.941)');
});

test('writePlots: an SVG with a line, band and points per series, and a PNG, per target', async () => {
  const dir = await tempRun();
  await buildRunFolder(dir);
  const paths = await writePlots(dir);
  assert.equal(paths.map((p) => p.slice(dir.length + 1)).sort(), ['plots/rho-cnn.png', 'plots/rho-cnn.svg', 'plots/rho-svm-rbf.png', 'plots/rho-svm-rbf.svg']);
  for (const target of ['cnn', 'svm-rbf']) {
    const svg = await readFile(join(dir, 'plots', `rho-${target}.svg`), 'utf8');
    assert.ok(svg.startsWith('<svg'), 'an SVG document');
    assert.ok(svg.trimEnd().endsWith('</svg>'));
    assert.is(markCount(svg, RHO_LAYERS.line), 4, `${target}: a line per series`);
    assert.is(markCount(svg, RHO_LAYERS.band), 4, `${target}: a band per series`);
    assert.is(symbolCount(svg, RHO_LAYERS.points), 12, `${target}: a point per budget and series`);
    assert.match(svg, `${target} (target accuracy ${ACCURACY[target]})`);
    const width = Number(svg.match(/width="(\d+)"/)![1]);
    const meta = await sharp(join(dir, 'plots', `rho-${target}.png`)).metadata();
    assert.is(meta.format, 'png');
    assert.is(meta.width, 2 * width, 'PNG at twice the SVG size');
    assert.ok((meta.height ?? 0) > 0);
  }
  assert.is(safeName('mlp@subset-0137'), 'mlp_subset-0137');
  assert.is(safeName('../etc/passwd'), 'etc_passwd');
});

test('planPlots: one task-averaged plot per task set, none for a target without any ρ', () => {
  const cells = fixtureCells(fixtureConfig()).filter((c) => c.target === 'cnn');
  const member = (task: string, shift: number) =>
    cells.map((c) => ({ ...c, target: `mlp@${task}`, task, rho: c.rho === null ? null : c.rho + shift }));
  const dead = cells.map((c) => ({ ...c, target: 'svm-rbf', status: 'not-applicable' as const, rho: null }));
  const all = [...cells, ...member('parity', 0.1), ...member('digits', 0.3), ...dead];
  const group = { base: 'mlp', family: 'mlp', members: [{ id: 'mlp@parity', task: 'parity' }, { id: 'mlp@digits', task: 'digits' }] };
  const plans = planPlots({ curves: toCurves(all), taskCurves: toTaskCurves(all, [group]) });
  assert.equal(plans.map((p) => p.name), ['rho-cnn', 'rho-mlp-tasks']);
  assert.match(JSON.stringify(plans[1].spec.title), 'mlp: ρ averaged over 2 tasks');
  // The task-averaged ρ at a point is the mean of the members': the cnn ρ shifted by (0.1 + 0.3) / 2.
  const rows = (plans[1].spec.data as { values: { series: string; budget: number; rho: number }[] }).values;
  const cnnRows = rhoPlotRows(toCurves(cells), 'cnn');
  const same = (r: { series: string; budget: number }) => cnnRows.find((q) => q.series === r.series && q.budget === r.budget)!;
  assert.is(rows.length, 12);
  for (const r of rows.filter((r) => same(r).seeds === 2)) assert.ok(Math.abs(r.rho - (same(r).rho + 0.2)) < 1e-9, r.series);
});

// ---- report --------------------------------------------------------------------------------------

test('report.html: plots inline, failed cell escaped, GPU stated, (ε, δ) table, nothing external', async () => {
  const dir = await tempRun();
  const { cells } = await buildRunFolder(dir);
  const path = await writeReport(dir);
  assert.is(path, join(dir, 'report.html'));
  const html = await readFile(path, 'utf8');
  assert.ok(html.startsWith('<!DOCTYPE html>'));
  for (const target of ['cnn', 'svm-rbf']) assert.match(html, new RegExp(`<figure id="rho-${target}" data-target="${target}"><svg`));
  assert.is(html.split('<svg').length - 1, 2, 'one inline plot per target');
  assert.is(markCount(html, RHO_LAYERS.line), 8);

  assert.not.match(html, /<script/i, 'no raw script tag, from the error or anywhere');
  assert.match(html, 'student diverged: &lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; loss = NaN');
  assert.match(html, '1 of 48 cells failed');
  assert.match(html, '<dt>GPU</dt><dd>no: the wasm backend ran on the CPU</dd>');
  assert.match(html, 'GPU: no (backend wasm)');
  assert.match(html, '<h1>report-fixture — report-fixture-1 <span class="status finished">finished</span></h1>');
  assert.match(html, '<th class="num">ε = 0.05</th>');
  assert.not.match(html, /https?:\/\//, 'no URL at all: the page loads nothing');
  assert.not.match(html, /<(link|iframe|object|embed)\b/i);
  assert.not.match(html, /<img\b(?![^>]*src="data:)/i, 'images only as data: URIs');

  // The summary table holds the same means as the aggregate.
  const point = toCurves(cells).find((c) => c.target === 'svm-rbf' && c.attack === 'knockoff' && c.side === 'same+probs')!.points[2];
  assert.match(html, `${point.rhoMean!.toFixed(3)}<span class="ci">[${Math.max(0, point.rhoLow!).toFixed(3)}, ${point.rhoHigh!.toFixed(3)}]</span>`);
  // The failed and the not-applicable cell each had a sibling seed that succeeded: its ρ, no interval.
  assert.not.match(html, '<td class="failed">FAILED</td>');
  const lone = toCurves(cells).find((c) => c.target === 'cnn' && c.attack === 'knockoff' && c.side === 'same+label')!.points[1];
  assert.is(lone.n, 1);
  assert.match(html, `<td class="num" title="1 seed(s)">${lone.rhoMean!.toFixed(3)}</td>`);
});

test('report: a running run renders what exists and says so', async () => {
  const dir = await tempRun();
  await buildRunFolder(dir, { status: 'running', upTo: 10 });
  await appendFile(join(dir, 'cells.jsonl'), '{"target":"cnn","attack":"knock'); // killed mid-write
  const html = await buildReportHtml(dir);
  assert.match(html, 'This run is still in progress');
  assert.match(html, 'The report shows the 10 of 48 cells finished so far');
  assert.match(html, 'The last line of cells.jsonl was cut off');
  assert.match(html, 'not yet (still running)');
  assert.match(html, 'Written when the run ends.');
  assert.is(html.split('<svg').length - 1, 1, 'only cnn has cells yet');
  assert.is(markCount(html, RHO_LAYERS.line), 2, 'cnn × knockoff and distillation × same+probs, from cells.jsonl');
});

test('report: a missing or corrupt file is named, not dumped', async () => {
  const dir = await tempRun();
  const missing = await rejection(buildReportHtml(dir));
  assert.instance(missing, RunFolderError);
  assert.is(missing.message, `${join(dir, 'manifest.json')} is missing`);

  await buildRunFolder(dir);
  await writeFile(join(dir, 'rho.json'), '{"curves": [');
  const corrupt = await rejection(buildReportHtml(dir));
  assert.instance(corrupt, RunFolderError);
  assert.match(corrupt.message, `${join(dir, 'rho.json')} is not valid JSON`);

  await writeFile(join(dir, 'rho.json'), '{"curves": [{"target": 3}]}');
  const shape = await rejection(buildReportHtml(dir));
  assert.match(shape.message, `${join(dir, 'rho.json')} does not have the expected shape: curves.0.target`);

  await writeFile(join(dir, 'manifest.json'), '{"runId": "x"}');
  assert.match((await rejection(buildReportHtml(dir))).message, /manifest\.json does not have the expected shape: status/);

  await rm(join(dir, 'plots'), { recursive: true, force: true });
  // writePlots reads rho.json through the same check.
  await writeFile(join(dir, 'rho.json'), '{"curves": [{"target": 3}]}');
  assert.match((await rejection(writePlots(dir))).message, `${join(dir, 'rho.json')} does not have the expected shape`);
});

// ---- query grid ----------------------------------------------------------------------------------

test('queryGridPng: tiles scaled up in a grid with label strips', async () => {
  const [n, h, w, columns] = [7, 28, 28, 4];
  const images = new Float32Array(n * h * w);
  images.fill(1, 1 * h * w, 2 * h * w); // image 1 white, image 0 black
  for (let j = 0; j < h * w; j++) images[2 * h * w + j] = (j % w) / (w - 1); // image 2: a left-to-right ramp
  const labels = ['7', '2', '1', '0', '4', '1', '4'];
  const png = await queryGridPng(images, h, w, labels, columns);
  const layout = queryGridLayout(n, h, w, columns);
  const meta = await sharp(png).metadata();
  assert.is(meta.format, 'png');
  assert.is(layout.scale, 3);
  assert.equal([meta.width, meta.height], [6 + 4 * (84 + 6), 6 + 2 * (84 + 18 + 6)]);
  assert.equal([meta.width, meta.height], [layout.width, layout.height]);

  const { data, info } = await sharp(png).greyscale().raw().toBuffer({ resolveWithObject: true });
  const at = (x: number, y: number) => data[y * info.width + x];
  const centre = (i: number) => [layout.left(i) + layout.tileW / 2, layout.top(i) + layout.tileH / 2];
  assert.is(at(...(centre(0) as [number, number])), 0);
  assert.is(at(...(centre(1) as [number, number])), 255);
  // Nearest-neighbour: the ramp's first image column fills the tile's first 3 screen columns.
  const [x2, y2] = [layout.left(2), layout.top(2) + 10];
  assert.equal([at(x2, y2), at(x2 + 2, y2)], [0, 0]);
  assert.is(at(x2 + 3, y2), Math.round(255 / 27));
  assert.is(at(x2 + layout.tileW - 1, y2), 255);

  const bad = await rejection(queryGridPng(images.subarray(1), h, w, labels, columns));
  assert.match(bad.message, 'expected 7 labels × 28 × 28 = 5488');
});

// ---- headless browser ----------------------------------------------------------------------------

function findBrowser(): string | null {
  if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH;
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    for (const dir of (process.env.PATH ?? '').split(delimiter)) {
      const path = join(dir, name);
      try {
        accessSync(path, constants.X_OK);
        return path;
      } catch {
        // not here
      }
    }
  }
  return null;
}

test('report.html in headless Chromium: no errors, every plot visible', async () => {
  const executablePath = findBrowser();
  if (!executablePath) {
    console.log('report.test: skipped the headless Chromium check: no chromium on PATH (install Debian\'s chromium package)');
    return;
  }
  const dir = await tempRun();
  await buildRunFolder(dir);
  const path = await writeReport(dir);
  const { default: puppeteer } = await import('puppeteer-core');
  const browser = await puppeteer.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const problems: string[] = [];
    const fetched: string[] = [];
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`page: ${err instanceof Error ? err.message : String(err)}`));
    page.on('request', (req) => fetched.push(req.url()));
    await page.goto(pathToFileURL(path).href, { waitUntil: 'load' });
    assert.equal(problems, []);
    assert.equal(fetched, [pathToFileURL(path).href], 'the page loads nothing but itself');
    const plots = await page.$$('figure > svg');
    assert.is(plots.length, 2);
    for (const svg of plots) {
      assert.ok(await svg.isVisible());
      const box = await svg.boundingBox();
      assert.ok(box && box.width > 100 && box.height > 100, `plot box ${JSON.stringify(box)}`);
    }
  } finally {
    await browser.close();
  }
});

test.after(async () => {
  await Promise.all(tmpDirs.map((d) => rm(d, { recursive: true, force: true })));
});

test.run();
