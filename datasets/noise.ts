import { rng } from '../models/seed.ts';
import { DatasetError } from './errors.ts';
import type { Split } from './types.ts';

/** Uniform noise in [0, 1), labels -1: the attacker with no data at all. */
export function noiseSplit(n: number, rowSize: number, seed: number): Split {
  if (!Number.isInteger(n) || n < 0 || !Number.isInteger(rowSize) || rowSize < 1) {
    throw new DatasetError(`a noise pool needs an integer n ≥ 0 and rowSize ≥ 1, got n=${n}, rowSize=${rowSize}`);
  }
  // Its own stream: a noise pool and an MNIST sample with the same seed must not be correlated.
  const random = rng(seed, 'noise');
  const x = new Float32Array(n * rowSize);
  for (let i = 0; i < x.length; i++) x[i] = random();
  return { x, y: new Int32Array(n).fill(-1), n };
}
