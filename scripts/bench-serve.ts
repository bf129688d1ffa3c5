/**
 * `npm run bench:serve`: the prediction API's throughput and latency against one target, JSON and
 * binary encodings at batch sizes 1, 32 and 256, beside the in-process oracle measured in the same
 * run. Prints a table and writes results/perf-serve.json. Loopback only; every loop is bounded.
 */
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadSweepConfig } from '../bench/config.ts';
import { REPO_ROOT } from '../bench/manifest.ts';
import { writeAtomic } from '../bench/writers.ts';
import { defaultCacheDir, loadDataset } from '../datasets/index.ts';
import { toTensor } from '../datasets/split.ts';
import { initBackend } from '../engine/backend.ts';
import { getTarget } from '../models/targets/index.ts';
import type { ServeConfig } from '../serve/config.ts';
import { hashKey } from '../serve/keys.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import { startServer } from '../serve/server.ts';
import { BINARY_TYPE, CLASSES_HEADER, decodeF32, encodeF32, JSON_TYPE, ROWS_HEADER } from '../serve/wire.ts';

const TARGET_ID = process.argv[2] ?? 'cnn';
const BATCHES = [1, 32, 256];
const SECONDS = 2; // per measurement, after a warm-up
const MAX_REQUESTS = 2000;
const KEY = 'bench-serve-local-key';

const backend = await initBackend('auto');
const quick = await loadSweepConfig(join(REPO_ROOT, 'bench', 'presets', 'quick.json'));
const spec = quick.targets.find((t) => t.id === TARGET_ID);
if (!spec) throw new Error(`quick preset has no target "${TARGET_ID}" (has ${quick.targets.map((t) => t.id).join(', ')})`);
const ds = await loadDataset(quick.dataset);
const target = await getTarget(spec, ds, { cacheDir: defaultCacheDir() });
const pool = ds.split('pool');
const rowLength = ds.inputShape.reduce((a, b) => a * b, 1);

const config = {
  port: 0,
  host: '127.0.0.1',
  dataset: quick.dataset,
  targets: [spec],
  keys: [{
    name: 'bench', sha256: hashKey(KEY), disclosure: { kind: 'probs' }, budget: Number.MAX_SAFE_INTEGER,
    rateLimit: { requestsPerSecond: 1e6, burst: 1e6 }, models: '*',
  }],
  ledger: join(await mkdtemp(join(tmpdir(), 'rhobench-bench-serve-')), 'ledger.jsonl'),
  maxRowsPerRequest: 1024,
  maxBodyBytes: 16 * 2 ** 20,
} satisfies ServeConfig;
const server = await startServer(config, { cacheDir: defaultCacheDir() });
const url = `${server.url}/v1/models/${TARGET_ID}/predict`;

function rowsAt(i: number, batch: number): Float32Array {
  const start = (i * batch) % (pool.n - batch);
  return pool.x.subarray(start * rowLength, (start + batch) * rowLength);
}

async function request(encoding: 'json' | 'binary', rows: Float32Array, batch: number): Promise<number> {
  const headers = { authorization: `Bearer ${KEY}`, 'content-type': encoding === 'json' ? JSON_TYPE : BINARY_TYPE, [ROWS_HEADER]: String(batch) };
  const body = encoding === 'json'
    ? JSON.stringify({ inputs: Array.from({ length: batch }, (_, r) => Array.from(rows.subarray(r * rowLength, (r + 1) * rowLength))) })
    : encodeF32(rows);
  const res = await fetch(url, { method: 'POST', headers, body });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  if (encoding === 'json') return ((await res.json()) as { outputs: number[][] }).outputs.length;
  const out = decodeF32(new Uint8Array(await res.arrayBuffer()));
  return out.length / Number(res.headers.get(CLASSES_HEADER));
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];

/** Sequential requests for SECONDS: answers/s and per-request latency percentiles. */
async function measure(send: (i: number) => Promise<number>) {
  for (let i = 0; i < 3; i++) await send(i); // warm-up
  const latencies: number[] = [];
  let rows = 0;
  const start = performance.now();
  for (let i = 0; i < MAX_REQUESTS && performance.now() - start < SECONDS * 1000; i++) {
    const t0 = performance.now();
    rows += await send(i);
    latencies.push(performance.now() - t0);
  }
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    requests: latencies.length,
    answersPerSecond: Math.round(rows / seconds),
    p50ms: Math.round(percentile(latencies, 0.5) * 100) / 100,
    p99ms: Math.round(percentile(latencies, 0.99) * 100) / 100,
  };
}

const results: Record<string, unknown>[] = [];
for (const batch of BATCHES) {
  const oracle = new InProcessOracle(target, Number.MAX_SAFE_INTEGER, { kind: 'probs' });
  const inProcess = await measure(async (i) => {
    const x = tf.tensor4d(rowsAt(i, batch), [batch, ...ds.inputShape]);
    const answer = await oracle.query(x);
    await answer.data(); // an API answer is only done once its numbers exist
    tf.dispose([x, answer]);
    return batch;
  });
  results.push({ transport: 'inprocess', batch, ...inProcess });
  for (const encoding of ['json', 'binary'] as const) {
    results.push({ transport: `http-${encoding}`, batch, ...(await measure((i) => request(encoding, rowsAt(i, batch), batch))) });
  }
}
await server.close();
target.dispose();

console.log(`target ${TARGET_ID} (${target.family}) on ${backend.name}${backend.gpu ? ' (GPU)' : ''}: sequential requests, ${SECONDS} s each`);
console.log(['transport', 'batch', 'answers/s', 'p50 ms', 'p99 ms'].map((h) => h.padStart(12)).join(''));
for (const r of results) console.log([r.transport, r.batch, r.answersPerSecond, r.p50ms, r.p99ms].map((v) => String(v).padStart(12)).join(''));
const at256 = (t: string) => (results.find((r) => r.transport === t && r.batch === 256)?.answersPerSecond as number) ?? NaN;
const ratio = at256('inprocess') / at256('http-binary');
console.log(`binary HTTP at batch 256 is ${ratio.toFixed(2)}× slower than in-process (aim: within 2×)`);

await mkdir(join(REPO_ROOT, 'results'), { recursive: true });
await writeAtomic(join(REPO_ROOT, 'results', 'perf-serve.json'), JSON.stringify({
  measuredAt: new Date().toISOString(), target: TARGET_ID, family: target.family, backend: backend.name, gpu: backend.gpu,
  secondsPerMeasurement: SECONDS, results, inProcessOverBinaryAt256: Math.round(ratio * 100) / 100,
}, null, 2) + '\n');
console.log('wrote results/perf-serve.json');
