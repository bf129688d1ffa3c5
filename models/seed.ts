import seedrandom from 'seedrandom';

// Some tfjs initializers treat a seed of 0 as "no seed", so user seeds are mapped to a
// distinct non-zero string before they reach any generator.
const key = (seed: number, stream: string) => `rhobench:${stream}:${seed}`;

/** An independent seeded generator in [0, 1); touches no global state. */
export function rng(seed: number, stream = 'sample'): () => number {
  return seedrandom(key(seed, stream));
}

/** tfjs initializers and shuffles read Math.random: install a seeded one. Returns the restore function. */
export function seedGlobalRandom(seed: number): () => void {
  const previous = Math.random;
  Math.random = seedrandom(key(seed, 'global'));
  return () => {
    Math.random = previous;
  };
}

/**
 * Runs fn with a seeded Math.random for its synchronous part (building a model initialises its
 * weights there), restored before anything else can run: cells interleaved in one thread each
 * see their own generator. Randomness in awaited code must use generators of its own (rng).
 */
export async function withSeed<T>(seed: number, fn: () => T | Promise<T>): Promise<T> {
  const restore = seedGlobalRandom(seed);
  let out: T | Promise<T>;
  try {
    out = fn();
  } finally {
    restore();
  }
  return await out;
}

/** k distinct indices from [0, n), a prefix of one seeded permutation: budgets of one seed are nested. */
export function sampleIndices(n: number, k: number, seed: number): Int32Array {
  if (!Number.isInteger(k) || k < 0 || k > n) throw new RangeError(`cannot sample ${k} distinct indices from ${n}`);
  const random = rng(seed);
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(random() * (n - i));
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm.slice(0, k);
}

/** Seeded in-place Fisher–Yates shuffle. */
export function shuffleInPlace(a: Int32Array, random: () => number): Int32Array {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a;
}

/** Standard normal draws by Box–Muller from a seeded uniform generator. */
export function gaussians(count: number, random: () => number): Float64Array {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i += 2) {
    // 1 − u keeps the logarithm's argument in (0, 1].
    const r = Math.sqrt(-2 * Math.log(1 - random()));
    const t = 2 * Math.PI * random();
    out[i] = r * Math.cos(t);
    if (i + 1 < count) out[i + 1] = r * Math.sin(t);
  }
  return out;
}
