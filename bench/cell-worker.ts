/**
 * A sweep's worker thread (started by WorkerPool in workers.ts). Its imports load while the main
 * thread prepares; the init message then says what to prepare (backend, dataset, targets from the
 * cache the main thread filled, pools), once. It then runs the cells it is sent, one at a time,
 * and posts each CellResult back.
 */
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parentPort } from 'node:worker_threads';
import { ATTACKS } from '../attacks/index.ts';
import { silentProgress } from './progress.ts';
import { QuerySampler } from './query-samples.ts';
import { prepareSweep, runCell, type SweepEnv } from './runner.ts';
import { attackRegistryDigest, type FromWorker, type ToWorker, type WorkerInit } from './workers.ts';

const port = parentPort;
if (!port) throw new Error('bench/cell-worker.ts runs as a worker thread of a sweep, not on its own');
const post = (msg: FromWorker) => port.postMessage(msg);
const init = await new Promise<WorkerInit>((resolve) => {
  const first = (msg: ToWorker) => {
    if (msg.type !== 'init') return;
    port.off('message', first);
    resolve(msg.init);
  };
  port.on('message', first);
});

async function prepare(): Promise<SweepEnv | undefined> {
  try {
    for (const module of init.preload ?? []) await import(isAbsolute(module) ? pathToFileURL(module).href : module);
    // Preparing would say again what the main thread said (backend, targets loaded): kept quiet.
    return await prepareSweep(init.config, {
      cacheDir: init.cacheDir,
      backend: init.backend,
      progress: silentProgress,
    });
  } catch (err) {
    post({ type: 'start-failed', error: err instanceof Error ? err.message : String(err) });
    return undefined;
  }
}

const env = await prepare();
if (env) {
  // The main thread picks which cell draws each picture; that cell runs with the sampler.
  const sampling: SweepEnv = { ...env, samples: new QuerySampler(init.runDir, env.dataset.inputShape, (message) => post({ type: 'log', message })) };
  const plain: SweepEnv = { ...env, samples: undefined };
  port.on('message', async (msg: ToWorker) => {
    if (msg.type !== 'run') return;
    const onStep = (done: number, total: number, phase: string) => post({ type: 'step', id: msg.id, done, total, phase });
    post({ type: 'result', id: msg.id, result: await runCell(msg.sample ? sampling : plain, msg.cell, onStep) });
  });
  post({ type: 'ready', attacks: attackRegistryDigest(ATTACKS) });
}
