import { rng } from '../models/seed.ts';
import type { Split } from './types.ts';

/** Uniform noise in [0, 1]: the attacker with no data at all. */
export function noiseSplit(n: number, rowSize: number, seed: number): Split {
  const random = rng(seed, 'noise');
  const x = new Float32Array(n * rowSize);
  for (let i = 0; i < x.length; i++) x[i] = random();
  return { x, y: new Int32Array(n).fill(-1), n };
}
