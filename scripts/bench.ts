/**
 * `npm run bench`: speed figures, printed and written to results/perf.json. Not a test: numbers
 * depend on the machine. Sections not measured keep the figures results/perf.json already had.
 *
 * Training, per backend (webgpu only where Dawn offers a hardware adapter, unless named): samples/s
 * of fitSoft for every student at each batch size (128 and 1,024 on GPU backends); for the tracked
 * students (cnn-small, the reference, lenet5, mlp) the time of one step split into a forward pass
 * and the rest, and on webgpu its dispatches; and the per-kernel breakdown of one step (tf.profile:
 * GPU time from timestamp queries on webgpu, wall time on wasm), the least over a few steps.
 * Then oracle answers/s, the quick preset's wall time one cell at a time against one per core, and
 * with --gpu-sweep the 36-cell GPU yardstick. Flags: see --help.
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
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
import { fitStacked, type FitRequest } from '../models/stacked-fit.ts';
import { fitSoft, logitsOf, makeTrainStep } from '../models/train.ts';
import { STUDENT_ARCHS, type StudentArch } from '../models/types.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import { countDispatches } from '../engine/webgpu/program.ts';
import { probeDawn } from '../engine/webgpu/probe.ts';

const wholeNumbers = (v: string) => {
  const list = v.split(',').map(Number);
  if (!list.every((n) => Number.isInteger(n) && n >= 1)) throw new InvalidArgumentError(`expected whole numbers ≥ 1 separated by commas, got "${v}"`);
  return list;
};
const opts = new Command()
  .option('--skip-sweep', 'do not time the quick preset')
  .option('--training-only', 'time training only (no oracle, no quick preset)')
  .option('--backends <list>', 'backends to measure (default: webgpu where Dawn offers a hardware adapter, then tensorflow, wasm, cpu)')
  .option('--students <list>', 'students to train (default: all)')
  .option('--batches <list>', 'batch sizes to train at (default: 128,1024 on webgpu and tensorflow, 128 on wasm and cpu)', wholeNumbers)
  .option('--gpu-sweep <settings>', 'time the 36-cell sweep (quick without the related pool) on webgpu at these settings, each -c or -c:cells-per-thread (e.g. 1,1:4,4:2,auto), beside wasm -c auto')
  .option('--gpu-sweep-config <path>', 'the config --gpu-sweep times instead of quick without its related pool')
  .option('--sweep-pairs <n>', 'times to run the quick preset one cell at a time and then one per core', (v) => wholeNumbers(v)[0], 1)
  .parse()
  .opts<{ skipSweep?: boolean; trainingOnly?: boolean; backends?: string; students?: string; batches?: number[]; gpuSweep?: string; gpuSweepConfig?: string; sweepPairs: number }>();

type Measured = 'webgpu' | 'tensorflow' | 'wasm' | 'cpu';
const GPU_BACKENDS: readonly Measured[] = ['webgpu', 'tensorflow'];
/** Rows per timed epoch; the pure-JS cpu backend is ~100× slower and trains one batch. */
const ROWS = 4096;
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
async function trainingSpeed(ds: Dataset, arch: StudentArch, rows: number, batchSize: number, repeats: number): Promise<number> {
  const { x, y } = trainingData(ds, rows);
  const model = buildStudent(arch, ds.inputShape, ds.classes);
  try {
    // Warm-up: kernel and pipeline compilation, allocations (a short epoch: two full batches).
    const warm = Math.min(rows, 2 * batchSize);
    await fitSoft(model, x.slice(0, warm), y.slice(0, warm), { epochs: 1, batchSize, lr: 1e-3, seed: 1 });
    // The best epoch: the figure describes the code, not whatever else the machine ran.
    let best = Infinity;
    for (let i = 0; i < repeats; i++) {
      const t0 = performance.now();
      await fitSoft(model, x, y, { epochs: 1, batchSize, lr: 1e-3, seed: 1 });
      best = Math.min(best, performance.now() - t0);
    }
    return rows / (best / 1000);
  } finally {
    model.dispose();
    tf.dispose([x, y]);
  }
}

/**
 * The least time per call of fn over `runs` runs of `inner` calls, in ms. Calls are queued back to
 * back and only the last result is read (as a training loop does), so on a GPU this is throughput,
 * not the latency of a readback per call.
 */
async function bestMs(fn: () => tf.Tensor, runs: number, inner: number): Promise<number> {
  let best = Infinity;
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    let last: tf.Tensor | undefined;
    for (let i = 0; i < inner; i++) {
      last?.dispose();
      last = fn();
    }
    await last!.data();
    last!.dispose();
    best = Math.min(best, (performance.now() - t0) / inner);
  }
  return best;
}

interface StepTimes {
  gradients: 'hand-derived' | 'autodiff';
  forwardMs: number;
  stepMs: number;
  backwardAndUpdateMs: number;
  /** GPU dispatches of one training step (webgpu). */
  dispatches?: number;
}

/** One batch: the forward pass (as inference runs it: logitsOf, the step's own fused kernels where they apply) and a whole training step, in ms. */
async function stepTimes(ds: Dataset, arch: StudentArch, batchSize: number, runs: number, inner: number): Promise<StepTimes> {
  const { x, y } = trainingData(ds, batchSize);
  const model = buildStudent(arch, ds.inputShape, ds.classes);
  const trainer = makeTrainStep(model, 1e-3);
  try {
    const logits = logitsOf(model);
    const forward = () => logits(x);
    const step = () => trainer.step(x, y);
    await bestMs(forward, 1, 3);
    await bestMs(step, 1, 3);
    const dispatches =
      tf.getBackend() === 'webgpu'
        ? await countDispatches(async () => {
            const loss = step();
            await loss.data();
            loss.dispose();
          })
        : undefined;
    const forwardMs = await bestMs(forward, runs, inner);
    const stepMs = await bestMs(step, runs, inner);
    return { gradients: trainer.gradients, forwardMs: round(forwardMs), stepMs: round(stepMs), backwardAndUpdateMs: round(stepMs - forwardMs), ...(dispatches === undefined ? {} : { dispatches }) };
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
  /** Of the step's kernel time. */
  share: number;
}

/**
 * Per-kernel time of one training step, the least per call over `profiles` profiled steps. On
 * webgpu these are GPU times from timestamp queries; on wasm and cpu, wall times.
 */
async function kernelBreakdown(ds: Dataset, arch: StudentArch, batchSize: number, profiles: number): Promise<{ calls: number; totalMs: number; kernels: KernelRow[] }> {
  const { x, y } = trainingData(ds, batchSize);
  const model = buildStudent(arch, ds.inputShape, ds.classes);
  const trainer = makeTrainStep(model, 1e-3);
  try {
    const step = async () => {
      const loss = trainer.step(x, y);
      await loss.data();
      loss.dispose();
    };
    for (let i = 0; i < 5; i++) await step();
    const runs: Awaited<ReturnType<typeof tf.profile>>['kernels'][] = [];
    for (let i = 0; i < profiles; i++) runs.push((await tf.profile(step)).kernels);
    // Ops that wrap kernels (names ending in __op) are profiled too: count kernels only.
    const rows = new Map<string, Omit<KernelRow, 'share'>>();
    runs[0].forEach((k, i) => {
      if (k.name.endsWith('__op')) return;
      const ms = Math.min(...runs.map((r) => (r[i]?.kernelTimeMs as number) ?? Infinity));
      const row = rows.get(k.name) ?? { name: k.name, ms: 0, calls: 0 };
      row.ms += ms;
      row.calls++;
      rows.set(k.name, row);
    });
    const totalMs = [...rows.values()].reduce((s, k) => s + k.ms, 0);
    const kernels = [...rows.values()].sort((a, b) => b.ms - a.ms).map((r) => ({ ...r, ms: round(r.ms, 3), share: round(r.ms / (totalMs || 1), 3) }));
    return { calls: kernels.reduce((s, k) => s + k.calls, 0), totalMs: round(totalMs, 3), kernels };
  } finally {
    trainer.dispose();
    model.dispose();
    tf.dispose([x, y]);
  }
}

/**
 * Students trained stacked (webgpu): cnn-small at the quick preset's batch of 64 on 1,024 rows
 * each, K models as one program, samples/s over all K (the best of two epochs after a warm-up).
 * What stacking buys over training one model at a time.
 */
async function stacking(ds: Dataset): Promise<Record<number, number>> {
  const rows = 1024;
  const out: Record<number, number> = {};
  for (const k of [1, 4, 16]) {
    const { x, y } = trainingData(ds, rows);
    const requests: FitRequest[] = Array.from({ length: k }, (_, m) => ({
      model: buildStudent('cnn-small', ds.inputShape, ds.classes),
      x,
      targets: y,
      opts: { epochs: 1, batchSize: 64, lr: 1e-3, seed: m },
    }));
    try {
      await fitStacked(requests);
      let best = Infinity;
      for (let i = 0; i < 2; i++) {
        const t0 = performance.now();
        await fitStacked(requests);
        best = Math.min(best, performance.now() - t0);
      }
      out[k] = Math.round((k * rows) / (best / 1000));
      console.log(`webgpu: ${k} cnn-small students stacked train at ${out[k]} samples/s in all (batch 64)`);
    } finally {
      for (const r of requests) r.model.dispose();
      tf.dispose([x, y]);
    }
  }
  return out;
}

/** Which backends to measure: those named, or webgpu where Dawn offers a GPU (a software adapter would take hours), then the rest. */
async function backendsToMeasure(): Promise<{ names: Measured[]; skipped: Record<string, string> }> {
  if (opts.backends) return { names: opts.backends.split(',') as Measured[], skipped: {} };
  const probe = await probeDawn();
  if (probe.found && probe.hardware) return { names: ['webgpu', 'tensorflow', 'wasm', 'cpu'], skipped: {} };
  const why = probe.found ? `only a software adapter (${probe.label}); --backends webgpu measures it anyway` : probe.why;
  return { names: ['tensorflow', 'wasm', 'cpu'], skipped: { webgpu: why } };
}

const ds = await loadDataset({ name: 'mnist', trainSize: ROWS, poolSize: 1024, evalSize: 1000, seed: 1 });
const training: Record<string, unknown> = {};
const steps: Record<string, Record<string, Record<number, StepTimes>>> = {};
const kernels: Record<string, unknown> = {};
let fastest: BackendInfo | undefined;
const { names, skipped } = await backendsToMeasure();
for (const [name, why] of Object.entries(skipped)) {
  training[name] = { available: false, reason: why };
  console.log(`${name}: not measured — ${why}`);
}
for (const name of names) {
  let info: BackendInfo;
  try {
    info = await initBackend(name);
  } catch (err) {
    training[name] = { available: false, reason: (err as Error).message };
    console.log(`${name}: unavailable — ${(err as Error).message}`);
    continue;
  }
  const cpu = name === 'cpu';
  const label = `${name}${info.gpu ? ' (GPU)' : ''}`;
  const batches = opts.batches ?? (GPU_BACKENDS.includes(name) ? [128, 1024] : [128]);
  const rows = cpu ? 128 : ROWS;
  const archs = (cpu ? TRACKED : STUDENT_ARCHS).filter((a) => !opts.students || opts.students.split(',').includes(a));
  const byBatch: Record<number, Record<string, number>> = {};
  for (const batchSize of batches) {
    byBatch[batchSize] = {};
    for (const arch of archs) {
      byBatch[batchSize][arch] = Math.round(await trainingSpeed(ds, arch, rows, Math.min(batchSize, rows), cpu ? 1 : 3));
      console.log(`${label}: ${arch} trains at ${byBatch[batchSize][arch]} samples/s (batch ${batchSize})`);
    }
  }
  steps[name] = {};
  for (const arch of TRACKED.filter((a) => archs.includes(a))) {
    steps[name][arch] = {};
    for (const batchSize of cpu ? [128] : batches) {
      const t = await stepTimes(ds, arch, batchSize, cpu ? 1 : 5, cpu ? 1 : 10);
      steps[name][arch][batchSize] = t;
      console.log(`${name}: ${arch} step at batch ${batchSize}: ${t.stepMs} ms = forward ${t.forwardMs} + backward and update ${t.backwardAndUpdateMs} (${t.gradients} gradients${t.dispatches === undefined ? '' : `, ${t.dispatches} dispatches`})`);
    }
  }
  if (!cpu) {
    // Where a step's time goes: cnn-small, the reference; on a GPU also resnet-mini (autodiff).
    const profiled = (GPU_BACKENDS.includes(name) ? (['cnn-small', 'resnet-mini'] as const) : (['cnn-small'] as const)).filter((a) => archs.includes(a));
    kernels[name] = {};
    for (const arch of profiled)
      for (const batchSize of GPU_BACKENDS.includes(name) ? batches : [128]) {
        const k = await kernelBreakdown(ds, arch, batchSize, GPU_BACKENDS.includes(name) ? 3 : 7);
        (kernels[name] as Record<string, unknown>)[`${arch}@${batchSize}`] = k;
        console.log(`${name}: ${arch} step kernels at batch ${batchSize} (${k.calls} calls, ${k.totalMs} ms in kernels${name === 'webgpu' ? ' on the GPU' : ''}; least of several profiled steps):`);
        for (const r of k.kernels.slice(0, 12)) if (r.ms >= 0.005) console.log(`  ${r.name.padEnd(30)} ${r.ms.toFixed(3).padStart(8)} ms ${(100 * r.share).toFixed(1).padStart(5)} %  ×${r.calls}`);
      }
  }
  const stackingSpeed = name === 'webgpu' && archs.includes('cnn-small') ? await stacking(ds) : undefined;
  training[name] = { available: true, gpu: info.gpu, reason: info.reason, samplesPerSecond: byBatch[128] ?? byBatch[batches[0]], byBatch, ...(stackingSpeed ? { stacking: stackingSpeed } : {}) };
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
  backend?: string;
  cellsPerThread: number;
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
 * `rhobench sweep <config> -c <concurrency> [-b backend]` as a user runs it, in a fresh process
 * (this one has run the training benchmarks and would not stand for a user's), timed from start
 * to exit.
 */
async function timeCliSweep(config: string, concurrency: string, backend?: string, cellsPerThread?: string): Promise<SweepTiming> {
  const runId = `bench-${basename(config, '.json')}-${backend ?? 'auto'}-c${concurrency}${cellsPerThread ? `x${cellsPerThread}` : ''}-${Date.now()}`;
  const started = performance.now();
  const args = [join(REPO_ROOT, 'scripts', 'rhobench.js'), 'sweep', config, '-c', concurrency, '--run-id', runId, ...(backend ? ['-b', backend] : []), ...(cellsPerThread ? ['--cells-per-thread', cellsPerThread] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const seconds = (performance.now() - started) / 1000;
  const what = `rhobench sweep ${config} -c ${concurrency}${backend ? ` -b ${backend}` : ''}${cellsPerThread ? ` --cells-per-thread ${cellsPerThread}` : ''}`;
  if (code !== 0) throw new Error(`${what} exited with ${code}`);
  const dir = join(REPO_ROOT, 'results', runId);
  const folder = await readRunFolder(dir);
  if (!folder) throw new Error(`${what} left no run in ${dir}`);
  const { manifest, cells } = folder;
  const workers = manifest.workers;
  return {
    concurrency,
    ...(backend ? { backend } : {}),
    cellsPerThread: workers?.cellsPerThread ?? 1,
    cellSeconds: cells.reduce((sum, c) => sum + c.seconds, 0),
    threads: workers?.threads ?? 1,
    workerThreads: workers && 'workerThreads' in workers ? workers.workerThreads : 0,
    seconds,
    cells: manifest.cells.total,
  };
}

/**
 * The issue's GPU yardstick: the quick preset without its related pool (36 cells), with wasm on
 * every core against webgpu at each -c setting asked for. Written to results/ as a config file.
 */
async function gpuSweep(settings: string[]): Promise<Record<string, unknown>> {
  let path = opts.gpuSweepConfig;
  if (!path) {
    const quick = JSON.parse(await readFile(join(REPO_ROOT, 'bench', 'presets', 'quick.json'), 'utf8'));
    const config = { ...quick, name: 'quick36', side: quick.side.filter((s: { pool: string }) => s.pool !== 'related') };
    path = join(REPO_ROOT, 'results', 'quick36.json');
    await mkdir(join(REPO_ROOT, 'results'), { recursive: true });
    await writeAtomic(path, JSON.stringify(config, null, 2) + '\n');
  }
  const name = basename(path, '.json');
  const runs: SweepTiming[] = [await timeCliSweep(path, 'auto', 'wasm')];
  console.log(`${name} on wasm -c auto (${runs[0].threads} threads): ${runs[0].seconds.toFixed(1)} s`);
  for (const setting of settings) {
    const [c, k] = setting.split(':');
    const t = await timeCliSweep(path, c, 'webgpu', k);
    runs.push(t);
    console.log(`${name} on webgpu -c ${c}${k ? ` --cells-per-thread ${k}` : ''} (${t.threads} threads × ${t.cellsPerThread}): ${t.seconds.toFixed(1)} s (×${(runs[0].seconds / t.seconds).toFixed(2)} wasm's speed)`);
  }
  return { config: opts.gpuSweepConfig ? name : 'quick36 (quick without the related pool)', cells: runs[0].cells, runs: runs.map((r) => ({ ...r, seconds: round(r.seconds, 1), cellSeconds: round(r.cellSeconds, 1) })) };
}

const gpuSweepTimes = opts.gpuSweep ? await gpuSweep(opts.gpuSweep.split(',')) : undefined;

const perfPath = join(REPO_ROOT, 'results', 'perf.json');
const previous = (await readFile(perfPath, 'utf8').then(JSON.parse).catch(() => ({}))) as Record<string, unknown>;
const perf = {
  measuredAt: new Date().toISOString(),
  node: process.version,
  tfjs: tf.version.tfjs,
  /** samplesPerSecond is at batch 128 (or the first batch measured); byBatch has every batch. */
  trainingSamplesPerSecond: training,
  /** One training step of the tracked students per backend and batch: forward (logitsOf) and the rest, dispatches on webgpu. */
  trainingStepMs: steps,
  /** Per-kernel time of one step, per backend and student@batch (GPU time from timestamp queries on webgpu). */
  trainingKernels: kernels,
  oracleAnswersPerSecond: oracle ?? previous.oracleAnswersPerSecond ?? null,
  quickPreset: sweep ?? previous.quickPreset ?? null,
  gpuSweep: gpuSweepTimes ?? previous.gpuSweep ?? null,
  fastestTrainingBackend: fastest?.name ?? 'cpu',
};
await mkdir(join(REPO_ROOT, 'results'), { recursive: true });
await writeAtomic(perfPath, JSON.stringify(perf, null, 2) + '\n');
console.log(`wrote results/perf.json`);
