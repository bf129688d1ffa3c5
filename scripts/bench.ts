/**
 * `npm run bench`: speed figures, printed and written to results/perf.json. Not a test: numbers
 * depend on the machine. Flags: --skip-sweep (no quick-preset wall time), --training-only (no
 * oracle or quick preset either), --backends a,b, --sweep-pairs n (quick-preset timings, default
 * 1). Sections not measured keep the figures results/perf.json already had.
 *
 * Training: samples/s of fitSoft per student and backend, and for the students the project
 * tracks (cnn-small, the reference, lenet5 and mlp) the time of one step at batch 128 split into
 * a forward pass (model.predict) and the rest (gradients and the Adam update), plus the
 * per-kernel breakdown of one cnn-small step (tf.profile, the minimum over a few steps per call).
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Command, InvalidArgumentError } from 'commander';
import { loadSweepConfig } from '../bench/config.ts';
import { REPO_ROOT } from '../bench/manifest.ts';
import { readRunFolder } from '../bench/runner.ts';
import { writeAtomic } from '../bench/writers.ts';
import { defaultCacheDir, loadDataset } from '../datasets/index.ts';
import { toTensor } from '../datasets/split.ts';
import type { Dataset } from '../datasets/types.ts';
import { initBackend, type BackendInfo } from '../engine/backend.ts';
import { buildStudent } from '../models/students.ts';
import { getTarget } from '../models/targets/index.ts';
import { fitSoft, makeTrainStep } from '../models/train.ts';
import { STUDENT_ARCHS, type StudentArch } from '../models/types.ts';
import { InProcessOracle } from '../serve/oracle.ts';

const opts = new Command()
  .option('--skip-sweep', 'do not time the quick preset')
  .option('--training-only', 'time training only (no oracle, no quick preset)')
  .option('--backends <list>', 'backends to measure', 'tensorflow,wasm,cpu')
  .option('--sweep-pairs <n>', 'times to run the quick preset one cell at a time and then one per core', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a whole number ≥ 1, got "${v}"`);
    return n;
  }, 1)
  .parse()
  .opts<{ skipSweep?: boolean; trainingOnly?: boolean; backends: string; sweepPairs: number }>();

const BATCH = 128;
/** The students whose step time the project tracks; cnn-small is the reference student. */
const TRACKED: readonly StudentArch[] = ['cnn-small', 'lenet5', 'mlp'];
const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits;

function trainingData(ds: Dataset, rows: number) {
  const split = ds.split('train');
  const x = toTensor(split, ds.inputShape, 0, rows);
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d(split.y.subarray(0, rows), 'int32'), ds.classes).toFloat() as tf.Tensor2D);
  return { x, y };
}

/** Training samples/s for one epoch over `rows` rows: the best of `repeats` epochs after a warm-up one. */
async function trainingSpeed(ds: Dataset, arch: StudentArch, rows: number, repeats: number): Promise<number> {
  const { x, y } = trainingData(ds, rows);
  const model = buildStudent(arch, ds.inputShape, ds.classes);
  try {
    // Warm-up: kernel compilation (wasm tiers up its hot functions), allocations.
    await fitSoft(model, x.slice(0, Math.min(rows, 2 * BATCH)), y.slice(0, Math.min(rows, 2 * BATCH)), {
      epochs: 1, batchSize: BATCH, lr: 1e-3, seed: 1,
    });
    // The best epoch: the figure describes the code, not whatever else the machine ran.
    let best = Infinity;
    for (let i = 0; i < repeats; i++) {
      const t0 = performance.now();
      await fitSoft(model, x, y, { epochs: 1, batchSize: BATCH, lr: 1e-3, seed: 1 });
      best = Math.min(best, performance.now() - t0);
    }
    return rows / (best / 1000);
  } finally {
    model.dispose();
    tf.dispose([x, y]);
  }
}

/** The least time of fn over `runs` runs of `inner` calls, in ms per call; reads force completion. */
function bestMs(fn: () => void, runs: number, inner: number): number {
  let best = Infinity;
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    for (let i = 0; i < inner; i++) fn();
    best = Math.min(best, (performance.now() - t0) / inner);
  }
  return best;
}

interface StepTimes {
  gradients: 'hand-derived' | 'autodiff';
  forwardMs: number;
  stepMs: number;
  backwardAndUpdateMs: number;
}

/** One batch: forward (model.predict) and a whole training step, in ms. */
function stepTimes(ds: Dataset, arch: StudentArch, runs: number, inner: number): StepTimes {
  const { x, y } = trainingData(ds, BATCH);
  const model = buildStudent(arch, ds.inputShape, ds.classes);
  const trainer = makeTrainStep(model, 1e-3);
  try {
    const forward = () => tf.tidy(() => void (model.predict(x) as tf.Tensor).dataSync());
    const step = () => tf.tidy(() => void trainer.step(x, y).dataSync());
    for (let i = 0; i < 5; i++) {
      forward();
      step();
    }
    const forwardMs = bestMs(forward, runs, inner);
    const stepMs = bestMs(step, runs, inner);
    return { gradients: trainer.gradients, forwardMs: round(forwardMs), stepMs: round(stepMs), backwardAndUpdateMs: round(stepMs - forwardMs) };
  } finally {
    trainer.dispose();
    model.dispose();
    tf.dispose([x, y]);
  }
}

interface KernelRow {
  name: string;
  ms: number;
  calls: number;
}

/** Per-kernel time of one training step, the least per call over `profiles` profiled steps. */
async function kernelBreakdown(ds: Dataset, arch: StudentArch, profiles: number): Promise<{ calls: number; totalMs: number; kernels: KernelRow[] }> {
  const { x, y } = trainingData(ds, BATCH);
  const model = buildStudent(arch, ds.inputShape, ds.classes);
  const trainer = makeTrainStep(model, 1e-3);
  try {
    const step = () => tf.tidy(() => void trainer.step(x, y).dataSync());
    for (let i = 0; i < 5; i++) step();
    const runs: Awaited<ReturnType<typeof tf.profile>>['kernels'][] = [];
    for (let i = 0; i < profiles; i++) runs.push((await tf.profile(step)).kernels);
    // Ops that wrap kernels (names ending in __op) are profiled too: count kernels only.
    const rows = new Map<string, KernelRow>();
    runs[0].forEach((k, i) => {
      if (k.name.endsWith('__op')) return;
      const ms = Math.min(...runs.map((r) => r[i]?.kernelTimeMs as number ?? Infinity));
      const row = rows.get(k.name) ?? { name: k.name, ms: 0, calls: 0 };
      row.ms += ms;
      row.calls++;
      rows.set(k.name, row);
    });
    const kernels = [...rows.values()].sort((a, b) => b.ms - a.ms).map((r) => ({ ...r, ms: round(r.ms) }));
    return { calls: kernels.reduce((s, k) => s + k.calls, 0), totalMs: round(kernels.reduce((s, k) => s + k.ms, 0)), kernels };
  } finally {
    trainer.dispose();
    model.dispose();
    tf.dispose([x, y]);
  }
}

const ds = await loadDataset({ name: 'mnist', trainSize: 4096, poolSize: 1024, evalSize: 1000, seed: 1 });
const training: Record<string, unknown> = {};
const steps: Record<string, Record<string, StepTimes>> = {};
let kernels: Record<string, unknown> | undefined;
let fastest: BackendInfo | undefined;
for (const name of opts.backends.split(',') as ('tensorflow' | 'wasm' | 'cpu')[]) {
  let info: BackendInfo;
  try {
    info = await initBackend(name);
  } catch (err) {
    training[name] = { available: false, reason: (err as Error).message };
    console.log(`${name}: unavailable — ${(err as Error).message}`);
    continue;
  }
  const cpu = name === 'cpu';
  // The pure-JS cpu backend is ~100× slower: a short run on the tracked students only.
  const rows = cpu ? BATCH : 4096;
  const archs: readonly StudentArch[] = cpu ? TRACKED : STUDENT_ARCHS;
  const perArch: Record<string, number> = {};
  for (const arch of archs) {
    perArch[arch] = Math.round(await trainingSpeed(ds, arch, rows, cpu ? 1 : 3));
    console.log(`${name}${info.gpu ? ' (GPU)' : ''}: ${arch} trains at ${perArch[arch]} samples/s (batch ${BATCH})`);
  }
  steps[name] = {};
  for (const arch of TRACKED) {
    const t = stepTimes(ds, arch, cpu ? 1 : 5, cpu ? 1 : 10);
    steps[name][arch] = t;
    console.log(`${name}: ${arch} step ${t.stepMs} ms = forward ${t.forwardMs} + backward and update ${t.backwardAndUpdateMs} (${t.gradients} gradients)`);
  }
  if (name === 'wasm') {
    const k = await kernelBreakdown(ds, 'cnn-small', 7);
    kernels = { backend: name, arch: 'cnn-small', batchSize: BATCH, ...k };
    console.log(`wasm: cnn-small step kernels (${k.calls} calls, ${k.totalMs} ms in kernels; least of 7 profiled steps per call):`);
    for (const r of k.kernels) if (r.ms >= 0.01) console.log(`  ${r.name.padEnd(30)} ${r.ms.toFixed(2).padStart(6)} ms  ×${r.calls}`);
  }
  training[name] = { available: true, gpu: info.gpu, reason: info.reason, samplesPerSecond: perArch };
  if (!fastest && !cpu) fastest = info;
}

let oracle: Record<string, unknown> | null = null;
let sweep: Record<string, unknown> | null = null;
if (!opts.trainingOnly) {
  // Oracle answers/s on the backend a sweep would pick.
  const backend = await initBackend('auto');
  const quick = await loadSweepConfig(join(REPO_ROOT, 'bench', 'presets', 'quick.json'));
  const quickData = await loadDataset(quick.dataset);
  const perTarget: Record<string, number> = {};
  for (const spec of quick.targets) {
    const target = await getTarget(spec, quickData, { cacheDir: defaultCacheDir(), log: (m) => console.log(m) });
    const rows = 2048;
    const x = toTensor(quickData.split('pool'), quickData.inputShape, 0, rows);
    const api = new InProcessOracle(target, 2 * rows, { kind: 'probs' });
    tf.dispose(await api.query(x.slice(0, 256))); // warm-up
    const t0 = performance.now();
    for (let i = 0; i < rows; i += 256) {
      const batch = x.slice(i, 256);
      tf.dispose([batch, await api.query(batch)]);
    }
    perTarget[spec.id] = Math.round(rows / ((performance.now() - t0) / 1000));
    console.log(`oracle ${spec.id} (${backend.name}): ${perTarget[spec.id]} answers/s at batch 256`);
    x.dispose();
    target.dispose();
  }
  oracle = { backend: backend.name, gpu: backend.gpu, batchSize: 256, perTarget };

  if (!opts.skipSweep) {
    // The same sweep one cell at a time and with one per core, alternating, `--sweep-pairs` times:
    // what worker threads buy on this machine. A shared machine's speed drifts between runs, so
    // each run also records its cells' own seconds summed (the work, which should not change).
    const round1 = (v: number) => round(v, 1);
    const runs: SweepTiming[] = [];
    const ratios: number[] = [];
    for (let i = 0; i < opts.sweepPairs; i++) {
      const one = await timeCliSweep('quick', '1');
      const many = await timeCliSweep('quick', 'auto');
      runs.push(one, many);
      ratios.push(one.seconds / many.seconds);
      console.log(`rhobench sweep quick (${one.cells} cells, targets from cache), start to exit: ${round1(one.seconds)} s one cell at a time, ${round1(many.seconds)} s ${many.threads} at a time (×${ratios.at(-1)!.toFixed(2)}; cells' own seconds ${round1(one.cellSeconds)} and ${round1(many.cellSeconds)})`);
    }
    const manyRuns = runs.filter((r) => r.concurrency === 'auto');
    sweep = {
      preset: 'quick',
      cells: runs[0].cells,
      cellsAtOnce: manyRuns[0].threads,
      workerThreads: manyRuns[0].workerThreads,
      seconds: round1(median(manyRuns.map((r) => r.seconds))),
      runs: runs.map((r) => ({ ...r, seconds: round1(r.seconds), cellSeconds: round1(r.cellSeconds) })),
      speedup: round(median(ratios)),
      speedups: ratios.map((r) => round(r)),
    };
    if (ratios.length > 1) console.log(`median speedup over ${ratios.length} pairs: ×${sweep.speedup}`);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

interface SweepTiming {
  concurrency: string;
  /** Cells run at once: the main thread's and the worker threads'. */
  threads: number;
  workerThreads: number;
  /** Start to exit. */
  seconds: number;
  /** The cells' own seconds, summed. */
  cellSeconds: number;
  cells: number;
}

/**
 * `rhobench sweep <preset> -c <concurrency>` as a user runs it, in a fresh process (this one has
 * run the training benchmarks and would not stand for a user's), timed from start to exit.
 */
async function timeCliSweep(preset: string, concurrency: string): Promise<SweepTiming> {
  const runId = `bench-${preset}-c${concurrency}-${Date.now()}`;
  const started = performance.now();
  const child = spawn(process.execPath, [join(REPO_ROOT, 'scripts', 'rhobench.js'), 'sweep', preset, '-c', concurrency, '--run-id', runId], { stdio: ['ignore', 'ignore', 'inherit'] });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`rhobench sweep ${preset} -c ${concurrency} exited with ${code}`);
  const dir = join(REPO_ROOT, 'results', runId);
  const folder = await readRunFolder(dir);
  if (!folder) throw new Error(`rhobench sweep ${preset} -c ${concurrency} left no run in ${dir}`);
  const { manifest, cells } = folder;
  const workers = manifest.workers;
  return {
    concurrency,
    cellSeconds: cells.reduce((sum, c) => sum + c.seconds, 0),
    threads: workers?.threads ?? 1,
    workerThreads: workers && 'workerThreads' in workers ? workers.workerThreads : 0,
    seconds,
    cells: manifest.cells.total,
  };
}

const perfPath = join(REPO_ROOT, 'results', 'perf.json');
const previous = (await readFile(perfPath, 'utf8').then(JSON.parse).catch(() => ({}))) as Record<string, unknown>;
const perf = {
  measuredAt: new Date().toISOString(),
  node: process.version,
  tfjs: tf.version.tfjs,
  batchSize: BATCH,
  trainingSamplesPerSecond: training,
  /** One training step of the tracked students per backend: forward (model.predict) and the rest. */
  trainingStepMs: steps,
  trainingKernels: kernels ?? null,
  oracleAnswersPerSecond: oracle ?? previous.oracleAnswersPerSecond ?? null,
  quickPreset: sweep ?? previous.quickPreset ?? null,
  fastestTrainingBackend: fastest?.name ?? 'cpu',
};
await mkdir(join(REPO_ROOT, 'results'), { recursive: true });
await writeAtomic(perfPath, JSON.stringify(perf, null, 2) + '\n');
console.log(`wrote results/perf.json`);
