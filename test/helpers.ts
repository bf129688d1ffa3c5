import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadDataset } from '../datasets/index.ts';
import type { Dataset } from '../datasets/types.ts';

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
