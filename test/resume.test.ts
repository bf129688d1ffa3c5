import { spawn } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ConfigError, parseSweepConfig, type SweepConfig } from '../bench/config.ts';
import { cellConfigDifferences, cellKey, expandCells } from '../bench/grid.ts';
import { REPO_ROOT } from '../bench/manifest.ts';
import { loadShards, mergeRuns, MergeError, planMerge } from '../bench/merge.ts';
import { createProgress, Tally } from '../bench/progress.ts';
import { runSweep } from '../bench/runner.ts';
import { parseShard, shardCells } from '../bench/shard.ts';
import type { CellResult } from '../bench/types.ts';
import { rejection, TEST_CACHE } from './helpers.ts';

const work = mkdtempSync(join(tmpdir(), 'rhobench-resume-'));
const results = join(work, 'results');

/** Cheap cells: a naive-Bayes target on small MNIST (cached across the suite), tiny students. */
const tinyJson = {
  name: 'tiny',
  dataset: { name: 'mnist', trainSize: 2000, poolSize: 1000, evalSize: 500, seed: 3 },
  targets: [{ id: 'nb', family: 'naive-bayes', trainSize: 2000 }],
  attacks: ['knockoff', 'distillation'],
  students: [{ arch: 'mlp', epochs: 2, batchSize: 32, lr: 0.003 }],
  side: [
    { name: 'same+probs', pool: 'same', disclosure: 'probs' },
    { name: 'noise+label', pool: 'noise', disclosure: 'label' },
  ],
  budgets: [50, 100],
  seeds: [1, 2],
  backend: 'wasm',
};
const tiny = parseSweepConfig(tinyJson);
const tinyPath = join(work, 'tiny.json');
writeFileSync(tinyPath, JSON.stringify(tinyJson));

/** Fewer, slower cells, so a kill lands while one is in flight. */
const slowJson = { ...tinyJson, name: 'slow', attacks: ['knockoff'], side: [tinyJson.side[0]], students: [{ arch: 'mlp', epochs: 6, batchSize: 32, lr: 0.003 }], budgets: [400], seeds: [1, 2, 3] };
const slow = parseSweepConfig(slowJson);
const slowPath = join(work, 'slow.json');
writeFileSync(slowPath, JSON.stringify(slowJson));

interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
}

/** The CLI as a child process; `onLine` sees each stdout line as it arrives (and may kill the child). */
function cli(args: string[], opts: { onLine?: (line: string, kill: () => void) => void; preload?: string } = {}): Promise<CliRun> {
  const entry = opts.preload ? ['--import', 'tsx', opts.preload] : [join(REPO_ROOT, 'scripts', 'rhobench.js')];
  const child = spawn(process.execPath, [...entry, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, RHOBENCH_CACHE: TEST_CACHE, RHOBENCH_REPO: REPO_ROOT },
  });
  let out = '';
  let err = '';
  let pending = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() as string;
    for (const line of lines) opts.onLine?.(line, () => child.kill('SIGKILL'));
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

const events = (out: string) => out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown> & { event: string });
const lines = (path: string) => readFileSync(path, 'utf8').split('\n').filter(Boolean);
const readCellsFile = (dir: string): CellResult[] => lines(join(dir, 'cells.jsonl')).map((l) => JSON.parse(l));
const json = (path: string) => JSON.parse(readFileSync(path, 'utf8'));
const keysOf = (config: SweepConfig) => expandCells(config).map(cellKey);

// ---------------------------------------------------------------------------------------------
// Pure

test('--shard i/n is 0-based and validated', () => {
  assert.equal(parseShard('0/4'), { index: 0, count: 4 });
  assert.equal(parseShard(' 3 / 4 '), { index: 3, count: 4 });
  assert.throws(() => parseShard('4/4'), /numbered from 0, so the index must be 0 to 3, got 4/);
  assert.throws(() => parseShard('0/0'), /count must be a whole number ≥ 1/);
  assert.throws(() => parseShard('1'), /takes i\/n/);
  assert.throws(() => parseShard('-1/3'), /takes i\/n/);
});

test('shard slices partition the grid exactly, in grid order, evenly, whatever the machine', () => {
  const grid = keysOf(tiny);
  assert.is(grid.length, 16);
  for (let n = 1; n <= 20; n++) {
    const slices = Array.from({ length: n }, (_, i) => shardCells(expandCells(tiny), { index: i, count: n }).map(cellKey));
    const all = slices.flat();
    assert.is(all.length, grid.length, `n=${n}: every cell once`);
    assert.is(new Set(all).size, grid.length, `n=${n}: no cell twice`);
    for (const s of slices) assert.equal(s, grid.filter((k) => s.includes(k)), `n=${n}: a slice keeps grid order`);
    const sizes = slices.map((s) => s.length);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `n=${n}: sizes ${sizes}`);
  }
  // A config parsed again (another machine) slices the same way.
  assert.equal(shardCells(keysOf(parseSweepConfig(tinyJson)), { index: 1, count: 3 }), shardCells(grid, { index: 1, count: 3 }));
});

test('config differences that change cells are named; runtime settings are not differences', () => {
  assert.equal(cellConfigDifferences(tiny, { ...tiny, concurrency: 4, backend: 'cpu', transport: 'http', epsilons: [0.3], name: 'other' }), []);
  assert.equal(cellConfigDifferences(tiny, { ...tiny, budgets: [50] }), ['budgets: [50,100] vs [50]']);
  const retrained = parseSweepConfig({ ...tinyJson, targets: [{ id: 'nb', family: 'naive-bayes', trainSize: 1000 }] });
  assert.equal(cellConfigDifferences(tiny, retrained), ['targets[nb].trainSize: 2000 vs 1000']);
  assert.equal(cellConfigDifferences(tiny, { ...tiny, side: [...tiny.side].reverse() }), ['side: the same items in another order']);
});

test('the terminal bar shows cells done/total, the cell in flight and an ETA; plain lines elsewhere', () => {
  const sink = (isTTY: boolean) => {
    const writes: string[] = [];
    return { writes, stream: { isTTY, columns: 300, write: (s: string) => writes.push(s) } as unknown as NodeJS.WriteStream };
  };
  const [a, b] = expandCells(tiny);
  const done = (cell: typeof a): CellResult => ({ ...cell, status: 'ok', rho: 0.25, agreement: 0.75, studentAccuracy: 0.7, targetAccuracy: 0.8, queries: 50, seconds: 1.5, backend: 'wasm', gpu: false });

  const tty = sink(true);
  const p = createProgress(tty.stream);
  p.runStart?.({ runDir: 'd', runId: 'r', total: 4, done: 1, toRun: 3, resumed: true });
  p.cellStart(1, 4, a);
  p.cellStep(3, 10, 'epochs');
  const live = tty.writes.at(-1) as string;
  assert.match(live, /^\r\x1b\[2K/, 'redraws one line');
  assert.match(live, / 1\/4 · ETA \? · nb · knockoff · same\+probs · mlp · 50 q · seed 1 · epochs 3\/10$/);
  p.cellEnd(1, 4, done(a));
  p.cellStart(2, 4, b);
  assert.match(tty.writes.join(''), /ρ=0\.250 \(1\.5s\) · 2\/4 done, ETA \d+s\n/);
  assert.match(tty.writes.at(-1) as string, / 2\/4 · ETA \d+s · nb · knockoff · same\+probs · mlp · 100 q · seed 1$/);

  const plain = sink(false);
  const q = createProgress(plain.stream);
  q.runStart?.({ runDir: 'd', runId: 'r', total: 2, done: 0, toRun: 2, resumed: false });
  q.cellStart(0, 2, a);
  q.cellStep(1, 2, 'epochs');
  q.cellEnd(0, 2, done(a));
  const text = plain.writes.join('');
  assert.not.match(text, /\r|\x1b/, 'no terminal control codes in CI logs');
  assert.equal(text.split('\n').filter(Boolean), [
    '2 cells',
    '[1/2] nb · knockoff · same+probs · mlp · 50 q · seed 1 …',
    `[1/2] nb · knockoff · same+probs · mlp · 50 q · seed 1 → ρ=0.250 (1.5s) · 1/2 done, ETA ${text.match(/ETA (\S+)\n/)![1]}`,
  ]);
});

test('the ETA is reckoned in queries, so it holds when the largest cells run first', () => {
  let now = 0;
  const tally = new Tally(() => now);
  // Cells of 3000, 1000 and 250 queries, largest first; one more of 3000 turns out not applicable.
  tally.begin({ total: 5, done: 0, queriesToRun: 3000 + 3000 + 1000 + 250 + 250 });
  tally.start();
  assert.is(tally.eta(), '?', 'nothing finished yet');
  now = 6000;
  tally.end({ status: 'ok', budget: 3000 });
  assert.is(tally.secondsLeft(), 9, '6 s for 3000 queries: the 4500 left take 9 s (a mean per cell would say 24 s)');
  tally.end({ status: 'not-applicable', budget: 3000 });
  assert.is(tally.secondsLeft(), 3, 'a cell that did not run leaves the work left, not the rate');
  now = 8000;
  tally.end({ status: 'ok', budget: 1000 });
  assert.is(tally.secondsLeft(), 1);
  assert.is(tally.eta(), '1s');
  // Without budgets (a minimal runStart): the mean time per cell.
  const plain = new Tally(() => now);
  plain.begin({ total: 4, done: 0 });
  plain.start();
  now += 2000;
  plain.end({ status: 'ok', budget: 50 });
  assert.is(plain.secondsLeft(), 6);
});

// ---------------------------------------------------------------------------------------------
// Resume (the CLI as a child process)

const killedDir = join(results, 'killed');

test('a run killed with SIGKILL mid-cell, its last line torn, resumes to every cell exactly once', async () => {
  const total = expandCells(slow).length;
  let landed = 0;
  const killed = await cli(['sweep', slowPath, '--results', results, '--run-id', 'killed', '--json'], {
    onLine: (line, kill) => {
      // cell-end is sent after the cell's line is appended to cells.jsonl; the next cell is starting.
      if (JSON.parse(line).event === 'cell-end' && ++landed === 1) kill();
    },
  });
  assert.is(killed.signal, 'SIGKILL', `the run finished before the kill: ${killed.err}`);
  const before = lines(join(killedDir, 'cells.jsonl'));
  assert.ok(before.length >= 1 && before.length < total, `${before.length} of ${total} cells landed`);
  assert.is(json(join(killedDir, 'manifest.json')).status, 'running');
  // A death mid-write leaves half a line with no newline.
  const torn = JSON.stringify({ target: 'nb', attack: 'knockoff', student: 'mlp', side: 'same+probs', budget: 400, seed: 3 }).slice(0, 45);
  appendFileSync(join(killedDir, 'cells.jsonl'), torn);

  const resumed = await cli(['sweep', '--resume', killedDir, '--json']);
  assert.is(resumed.code, 0, resumed.err);
  const ev = events(resumed.out);
  assert.ok(ev.some((e) => e.event === 'log' && /cells\.jsonl: its last line was torn by a crash mid-write; cut off/.test(String(e.message))), 'the torn line is reported');
  const start = ev.find((e) => e.event === 'start')!;
  assert.equal([start.total, start.done, start.toRun, start.resumed], [total, before.length, total - before.length, true]);
  assert.is(ev.filter((e) => e.event === 'cell-end').length, total - before.length);
  assert.is(ev.filter((e) => e.event === 'cell-start').length, total - before.length);
  const finish = ev.find((e) => e.event === 'finish')!;
  assert.equal(finish.counts, { total, ok: total, notApplicable: 0, failed: 0, missing: 0 });

  const cells = readCellsFile(killedDir);
  assert.equal(cells.map(cellKey).sort(), keysOf(slow).sort(), 'every cell exactly once');
  assert.ok(cells.every((c) => c.status === 'ok' && c.rho! >= 0 && c.rho! <= 1));
  assert.equal(cells.slice(0, before.length), before.map((l) => JSON.parse(l)), 'the cells that landed before the kill are kept as they were');
  const rho = json(join(killedDir, 'rho.json'));
  assert.is(rho.curves.length, 1);
  assert.is(rho.curves[0].points[0].n, 3, 'the curve point averages all three seeds');
  assert.is(lines(join(killedDir, 'rho.csv')).length, total + 1, 'a header and one row per cell');
  const manifest = json(join(killedDir, 'manifest.json'));
  assert.is(manifest.status, 'finished');
  assert.equal(manifest.cells, { total, ok: total, notApplicable: 0, failed: 0 });
  assert.equal([manifest.resumes.length, manifest.resumes[0].previousStatus, manifest.resumes[0].kept, manifest.resumes[0].tornLine], [1, 'running', before.length, true]);
  assert.ok(existsSync(join(killedDir, 'report.html')));
});

test('resuming a finished run runs nothing and leaves its cells as they are; another grid is refused by name', async () => {
  const cellsBefore = readFileSync(join(killedDir, 'cells.jsonl'), 'utf8');
  const again = await cli(['sweep', slowPath, '--resume', killedDir, '--json']);
  assert.is(again.code, 0, again.err);
  const ev = events(again.out);
  assert.equal(ev.filter((e) => e.event.startsWith('cell')), []);
  assert.equal([ev.find((e) => e.event === 'start')!.toRun, ev.at(-1)!.event], [0, 'finish']);
  assert.not.ok(ev.some((e) => /target nb/.test(String(e.message))), 'no target was loaded');
  assert.is(readFileSync(join(killedDir, 'cells.jsonl'), 'utf8'), cellsBefore);
  assert.is(json(join(killedDir, 'manifest.json')).status, 'finished');

  const other = await cli(['sweep', slowPath, '--resume', killedDir, '--budgets', '100,400']);
  assert.is(other.code, 2);
  assert.match(other.err, /cannot resume .*killed: it was run with a config that asks for other cells[^]*budgets: \[400\] vs \[100,400\]/);
  const fresh = await rejection(runSweep(slow, { resultsDir: results, cacheDir: TEST_CACHE, runId: 'killed' }));
  assert.instance(fresh, ConfigError, 'a fresh run into a folder that holds one is refused (the CLI exits 2)');
  assert.match(fresh.message, /already holds a run \(manifest\.json\): continue it with --resume/);
});

test('a cell that throws is recorded with its error, the sweep goes on and exits 1; --resume runs only the failed cells again', async () => {
  // The child replaces knockoff with an attack that throws, then runs the CLI.
  const preload = join(work, 'throwing.mts');
  writeFileSync(preload, [
    'const { ATTACKS } = await import(`${process.env.RHOBENCH_REPO}/attacks/index.ts`);',
    "ATTACKS.knockoff = { name: 'knockoff', run: async () => { throw new Error('injected failure'); } };",
    'await import(`${process.env.RHOBENCH_REPO}/scripts/cli.ts`);',
  ].join('\n'));
  const dir = join(results, 'throws');
  const failing = await cli(['sweep', tinyPath, '--seeds', '1', '--results', results, '--run-id', 'throws'], { preload });
  assert.is(failing.code, 1, failing.err);
  assert.match(failing.err, /4 of 8 cells failed; their errors are in cells\.jsonl/);
  const first = readCellsFile(dir);
  assert.is(first.length, 8, 'the sweep went on past the failures');
  const failed = first.filter((c) => c.status === 'failed');
  assert.ok(failed.length === 4 && failed.every((c) => c.attack === 'knockoff' && c.error === 'injected failure'));
  assert.is(first.filter((c) => c.status === 'ok').length, 2, 'distillation on probabilities still ran');

  const resumed = await cli(['sweep', '--resume', dir, '--json']);
  assert.is(resumed.code, 0, resumed.err);
  const ends = events(resumed.out).filter((e) => e.event === 'cell-end');
  assert.equal(ends.map((e) => e.key).sort(), failed.map(cellKey).sort(), 'only the failed cells ran again');
  const after = readCellsFile(dir);
  assert.equal(after.map(cellKey).sort(), keysOf({ ...tiny, seeds: [1] }).sort(), 'each cell once: the failed records were replaced');
  assert.ok(after.every((c) => c.status !== 'failed'));
  const manifest = json(join(dir, 'manifest.json'));
  assert.equal([manifest.resumes[0].rerunFailed, manifest.cells.failed], [4, 0]);
});

// ---------------------------------------------------------------------------------------------
// Shards and merge

const half = (index: number) => ({ index, count: 2 });

test('two shards merged equal one full run: the same cells, the same ρ', async () => {
  const full = await runSweep(tiny, { resultsDir: results, cacheDir: TEST_CACHE, runId: 'full' });
  for (const i of [0, 1]) {
    const shard = await runSweep(tiny, { resultsDir: results, cacheDir: TEST_CACHE, runId: `shard${i}`, shard: half(i) });
    assert.is(shard.results.length, 8);
    assert.equal(json(join(results, `shard${i}`, 'manifest.json')).shard, half(i));
  }
  const out = join(results, 'merged');
  const merged = await cli(['merge', out, join(results, 'shard1'), join(results, 'shard0')]);
  assert.is(merged.code, 0, merged.err);
  assert.match(merged.out, /merged 2 of 2 shards into .*merged: 16 of 16 cells \(12 ok, 4 n\/a, 0 failed\)/);
  const cells = readCellsFile(out);
  assert.equal(cells.map(cellKey), keysOf(tiny), 'every cell once, in grid order');
  const byKey = new Map(full.results.map((r) => [cellKey(r), r]));
  for (const c of cells) {
    const f = byKey.get(cellKey(c))!;
    assert.is(c.status, f.status, cellKey(c));
    assert.is(c.rho, f.rho, `${cellKey(c)}: merged ρ ${c.rho} vs full run ${f.rho}`);
  }
  const untimed = (dir: string) =>
    json(join(dir, 'rho.json')).curves.map((c: { points: { secondsMean: number }[] }) => ({ ...c, points: c.points.map(({ secondsMean: _s, ...p }) => p) }));
  assert.equal(untimed(out), untimed(join(results, 'full')), 'the same curves, timings aside');
  assert.is(lines(join(out, 'rho.csv')).length, 17);
  const manifest = json(join(out, 'manifest.json'));
  assert.is(manifest.status, 'finished');
  assert.equal(manifest.cells, { total: 16, ok: 12, notApplicable: 4, failed: 0 });
  assert.equal(manifest.merged.sources.map((s: { shard: unknown }) => s.shard), [half(0), half(1)]);
  assert.is(manifest.shard, undefined);
  assert.ok(existsSync(join(out, 'report.html')) && existsSync(join(out, 'benchmark.json')));
});

/** A copy of a shard folder, edited, for the refusals. */
function variant(from: string, name: string, edit: (dir: string) => void): string {
  const dir = join(work, 'variants', name);
  cpSync(join(results, from), dir, { recursive: true });
  edit(dir);
  return dir;
}

test('merge refuses shards that do not fit together, naming the problem', async () => {
  const s0 = join(results, 'shard0');
  const refusal = async (dirs: string[]) => {
    try {
      planMerge(await loadShards(dirs));
    } catch (err) {
      assert.instance(err, MergeError);
      return (err as Error).message;
    }
    throw new Error('expected a refusal');
  };
  const otherBudgets = variant('shard1', 'budgets', (d) => {
    const m = json(join(d, 'manifest.json'));
    m.config.budgets = [50, 200];
    writeFileSync(join(d, 'manifest.json'), JSON.stringify(m));
  });
  assert.match(await refusal([s0, otherBudgets]), /ran different configs[^]*budgets: \[50,100\] vs \[50,200\]/);
  const doubled = variant('shard1', 'doubled', (d) => appendFileSync(join(d, 'cells.jsonl'), lines(join(d, 'cells.jsonl'))[2] + '\n'));
  assert.match(await refusal([s0, doubled]), /cell nb\|\S+ appears twice in .*doubled\/cells\.jsonl \(duplicate cell\)/);
  const stray = variant('shard1', 'stray', (d) => appendFileSync(join(d, 'cells.jsonl'), lines(join(s0, 'cells.jsonl'))[0] + '\n'));
  assert.match(await refusal([s0, stray]), /holds cell nb\|knockoff\|mlp\|same\+probs\|50\|1, which belongs to shard 0\/2, but .*stray is shard 1\/2/);
  const copy = variant('shard0', 'copy', () => {});
  assert.match(await refusal([s0, copy]), /shard0 and .*copy are both shard 0\/2: overlapping shards/);
  assert.match(await refusal([s0, join(results, 'full')]), /split the grid in different ways/);

  // The CLI says the same and exits 2, writing nothing.
  const out = join(work, 'not-written');
  const r = await cli(['merge', out, s0, otherBudgets]);
  assert.is(r.code, 2);
  assert.match(r.err, /budgets: \[50,100\] vs \[50,200\]/);
  assert.not.ok(existsSync(out));
});

test('missing shards: merge exits 3 and writes nothing, unless --allow-partial (then the manifest says interrupted)', async () => {
  const s0 = join(results, 'shard0');
  const out = join(work, 'partial');
  const r = await cli(['merge', out, s0]);
  assert.is(r.code, 3, r.err);
  assert.match(r.err, /not merged: shard 1\/2 missing; 8 of 16 cells have no result/);
  assert.not.ok(existsSync(out));

  const partial = await mergeRuns(out, [s0], { allowPartial: true });
  assert.ok(partial.written);
  const manifest = json(join(out, 'manifest.json'));
  assert.equal([manifest.status, manifest.merged.missingShards, manifest.merged.missingCells, manifest.cells.total], ['interrupted', [1], 8, 16]);
  assert.is(readCellsFile(out).length, 8);
  // Once the last shard lands, merging again replaces the partial merge.
  const whole = await mergeRuns(out, [s0, join(results, 'shard1')]);
  assert.equal([whole.written, json(join(out, 'manifest.json')).status, readCellsFile(out).length], [true, 'finished', 16]);
  // But a folder that is not a merge's output is never overwritten.
  const err = await mergeRuns(join(results, 'full'), [s0, join(results, 'shard1')]).catch((e: Error) => e);
  assert.match(String(err), /full already exists and is not the output of an earlier merge/);
});

test.run();
