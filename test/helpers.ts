import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CellResult } from '../bench/types.ts';
import { loadDataset } from '../datasets/index.ts';
import type { Dataset } from '../datasets/types.ts';
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
