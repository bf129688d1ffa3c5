import { tmpdir } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import type { CellResult } from '../bench/types.ts';
import { loadDataset } from '../datasets/index.ts';
import type { Dataset } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { probeDawn } from '../engine/webgpu/probe.ts';

/** One cache for the whole suite, so each small target trains once per machine. */
export const TEST_CACHE = process.env.RHOBENCH_TEST_CACHE ?? join(tmpdir(), 'rhobench-test-cache');

/** Real MNIST, small: 2,000 provider rows, 2,000 attacker rows, 1,000 eval rows. */
export function smallMnist(seed = 3): Promise<Dataset> {
  return loadDataset({ name: 'mnist', trainSize: 2000, poolSize: 2000, evalSize: 1000, seed }, TEST_CACHE);
}

/** The error a promise rejects with (uvu has no assert.rejects); throws if it resolves. */
export async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** A finished cell's record for tests of what is computed from records; `over` sets its fields. */
export function cellResult(over: Partial<CellResult>): CellResult {
  return {
    target: 't', attack: 'knockoff', student: 'mlp', side: 's', budget: 100, seed: 1, status: 'ok',
    rho: 0.5, agreement: 0.5, studentAccuracy: 0.4, targetAccuracy: 0.9, queries: 100, seconds: 1,
    backend: 'wasm', gpu: false, ...over,
  };
}

/**
 * Whether a WebGPU adapter (a GPU, or Mesa's lavapipe on a CPU) is here for the webgpu tests;
 * where none is, prints why `what` is skipped, so a skip never passes silently.
 */
export async function haveWebgpu(what: string): Promise<boolean> {
  const probe = await probeDawn();
  if (probe.found) return true;
  console.log(`\n  SKIPPED on webgpu: ${what} (${probe.why}; .ci/run installs Mesa's lavapipe from bookworm-backports for these tests)`);
  return false;
}

/** max |a − e| / max |e| over one output. */
export function relativeError(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let diff = 0;
  let norm = 1e-12;
  for (let i = 0; i < e.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - e[i]));
    norm = Math.max(norm, Math.abs(e[i]));
  }
  return diff / norm;
}

/** The values and shapes of tensors, read asynchronously (the only read a GPU tensor allows), then disposed. */
export async function readAll(ts: tf.Tensor[]): Promise<{ shape: number[]; values: Float32Array | Int32Array | Uint8Array }[]> {
  const out = await Promise.all(ts.map(async (t) => ({ shape: t.shape, values: (await t.data()) as Float32Array | Int32Array | Uint8Array })));
  tf.dispose(ts);
  return out;
}

/** Runs fn on the cpu backend, then on `backend`, and compares every output within `tolerance` (relative to its largest value). */
export async function cpuVs(backend: 'wasm' | 'webgpu', label: string, fn: () => tf.Tensor[], tolerance = 1e-4): Promise<void> {
  await initBackend('cpu');
  const expected = await readAll(fn());
  await initBackend(backend);
  const actual = await readAll(fn());
  expected.forEach((e, j) => {
    assert.equal(actual[j].shape, e.shape, `shape of output ${j} for ${label}`);
    const err = relativeError(actual[j].values, e.values);
    assert.ok(err <= tolerance, `relative error ${err} in output ${j} for ${label} on ${backend}`);
  });
}
