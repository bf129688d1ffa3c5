/**
 * `npm run bench`: speed figures, printed and written to results/perf.json. Not a test: numbers
 * depend on the machine. Flags: --skip-sweep (no quick-preset wall time), --backends a,b.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Command } from 'commander';
import { loadSweepConfig } from '../bench/config.ts';
import { REPO_ROOT } from '../bench/manifest.ts';
import { createProgress } from '../bench/progress.ts';
import { runSweep } from '../bench/runner.ts';
import { writeAtomic } from '../bench/writers.ts';
import { defaultCacheDir, loadDataset } from '../datasets/index.ts';
import { toTensor } from '../datasets/split.ts';
import type { Dataset } from '../datasets/types.ts';
import { initBackend, type BackendInfo } from '../models/backend.ts';
import { buildStudent } from '../models/students.ts';
import { getTarget } from '../models/targets/index.ts';
import { fitSoft } from '../models/train.ts';
import { STUDENT_ARCHS, type StudentArch } from '../models/types.ts';
import { InProcessOracle } from '../serve/oracle.ts';

const opts = new Command()
  .option('--skip-sweep', 'do not time the quick preset')
  .option('--backends <list>', 'backends to measure', 'tensorflow,wasm,cpu')
  .parse()
  .opts<{ skipSweep?: boolean; backends: string }>();

const BATCH = 128;

/** Training samples/s for one epoch over `rows` rows, after a warm-up epoch (kernel compilation, allocations). */
async function trainingSpeed(ds: Dataset, arch: StudentArch, rows: number): Promise<number> {
  const split = ds.split('train');
  const x = toTensor(split, ds.inputShape, 0, rows);
  const y = tf.oneHot(tf.tensor1d(split.y.subarray(0, rows), 'int32'), ds.classes).toFloat() as tf.Tensor2D;
  const model = buildStudent(arch, ds.inputShape, ds.classes);
  try {
    await fitSoft(model, x.slice(0, Math.min(rows, 2 * BATCH)), y.slice(0, Math.min(rows, 2 * BATCH)), {
      epochs: 1, batchSize: BATCH, lr: 1e-3, seed: 1,
    });
    // The best of three epochs: the figure describes the code, not whatever else the machine ran.
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
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

const ds = await loadDataset({ name: 'mnist', trainSize: 4096, poolSize: 1024, evalSize: 1000, seed: 1 });
const training: Record<string, unknown> = {};
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
  // The pure-JS cpu backend is ~60× slower: fewer rows keep this script to minutes.
  const rows = name === 'cpu' ? 128 : 4096;
  const perArch: Record<string, number> = {};
  // The deeper students would take minutes each on cpu; it is measured on two for reference.
  const archs: readonly StudentArch[] = name === 'cpu' ? ['mlp', 'cnn-small'] : STUDENT_ARCHS;
  for (const arch of archs) {
    perArch[arch] = Math.round(await trainingSpeed(ds, arch, rows));
    console.log(`${name}${info.gpu ? ' (GPU)' : ''}: ${arch} trains at ${perArch[arch]} samples/s (batch ${BATCH})`);
  }
  training[name] = { available: true, gpu: info.gpu, reason: info.reason, samplesPerSecond: perArch };
  if (!fastest && name !== 'cpu') fastest = info;
}

// Oracle answers/s on the backend a sweep would pick.
const backend = await initBackend('auto');
const quick = await loadSweepConfig(join(REPO_ROOT, 'bench', 'presets', 'quick.json'));
const quickData = await loadDataset(quick.dataset);
const oracle: Record<string, number> = {};
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
  oracle[spec.id] = Math.round(rows / ((performance.now() - t0) / 1000));
  console.log(`oracle ${spec.id} (${backend.name}): ${oracle[spec.id]} answers/s at batch 256`);
  x.dispose();
  target.dispose();
}

let sweep: Record<string, unknown> | undefined;
if (!opts.skipSweep) {
  const t0 = performance.now();
  const run = await runSweep(quick, { runId: `bench-quick-${Date.now()}`, progress: createProgress() });
  sweep = { preset: 'quick', seconds: Math.round((performance.now() - t0) / 100) / 10, cells: run.results.length, dir: run.files.dir };
  console.log(`quick preset: ${sweep.seconds} s wall time for ${run.results.length} cells (targets from cache)`);
}

const perf = {
  measuredAt: new Date().toISOString(),
  node: process.version,
  tfjs: tf.version.tfjs,
  batchSize: BATCH,
  trainingSamplesPerSecond: training,
  oracleAnswersPerSecond: { backend: backend.name, gpu: backend.gpu, batchSize: 256, perTarget: oracle },
  quickPreset: sweep ?? null,
  fastestTrainingBackend: fastest?.name ?? 'cpu',
};
await mkdir(join(REPO_ROOT, 'results'), { recursive: true });
await writeAtomic(join(REPO_ROOT, 'results', 'perf.json'), JSON.stringify(perf, null, 2) + '\n');
console.log(`wrote results/perf.json`);
