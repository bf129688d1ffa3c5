import type { TrainingApi } from '../serve/training.ts';

/**
 * Restricted outcome (Xian et al., "Imitation Privacy"): when Alice's tasks come from a known
 * family, she need not learn Bob's data or model at all. She spends k₁ Stage I queries on a
 * quantised cover of the family, stores Bob's fitted values for each, and answers any later task
 * from the family by the stored answer of its nearest stored label vector, without asking Bob.
 * For a learner whose fitted values move continuously with the labels (ridge: f(y) = H y), the
 * error is at most that of the cover's radius, so ρ falls as the cover refines: the price is
 * k₁ ≈ (1/radius)^p queries for a p-dimensional family, not anything about Bob's n or his data.
 */

export interface OutcomeDictionary {
  labels: Float64Array[];
  outcomes: Float64Array[];
}

/** Stage I: Bob's fitted values for each label vector (λ sent under Protocol II, left out under I). */
export async function buildDictionary(api: TrainingApi, labels: Float64Array[], lambda?: number): Promise<OutcomeDictionary> {
  if (labels.length === 0) throw new RangeError('a restricted-outcome dictionary needs at least one task');
  const outcomes: Float64Array[] = [];
  for (const y of labels) {
    const response = await api.fit(lambda === undefined ? { y } : { y, lambda });
    if (!response.fitted) throw new Error('the restricted-outcome attack needs the service to release fitted values (Stage I)');
    outcomes.push(response.fitted);
  }
  return { labels, outcomes };
}

/** The stored answer of the stored label vector nearest to y (Euclidean): Alice's reply, no query spent. */
export function nearestOutcome(dictionary: OutcomeDictionary, y: Float64Array): { index: number; distance: number; outcome: Float64Array } {
  let best = -1;
  let bestSq = Infinity;
  dictionary.labels.forEach((stored, k) => {
    if (stored.length !== y.length) throw new RangeError(`task has ${y.length} labels, the dictionary's ${stored.length}`);
    let sq = 0;
    for (let i = 0; i < y.length && sq < bestSq; i++) sq += (stored[i] - y[i]) ** 2;
    if (sq < bestSq) {
      bestSq = sq;
      best = k;
    }
  });
  if (best < 0) throw new RangeError('the dictionary is empty');
  return { index: best, distance: Math.sqrt(bestSq), outcome: dictionary.outcomes[best] };
}

/**
 * The centres of a grid of `levels` cells per axis over [lo, hi]^p (levels^p points): the cover of
 * least radius among grids, (hi − lo)/(2·levels) per axis. levels = 1 is the family's centre.
 */
export function coefficientGrid(p: number, levels: number, lo = -1, hi = 1): Float64Array[] {
  if (!(Number.isInteger(p) && p >= 1)) throw new RangeError(`coefficient grid: p must be an integer ≥ 1 (got ${p})`);
  if (!(Number.isInteger(levels) && levels >= 1)) throw new RangeError(`coefficient grid: levels must be an integer ≥ 1 (got ${levels})`);
  if (!(lo < hi)) throw new RangeError(`coefficient grid: [${lo}, ${hi}] is empty`);
  const centres = Array.from({ length: levels }, (_, j) => lo + ((hi - lo) * (j + 0.5)) / levels);
  const total = levels ** p;
  const out: Float64Array[] = [];
  for (let k = 0; k < total; k++) {
    const point = new Float64Array(p);
    for (let a = 0, rest = k; a < p; a++, rest = Math.floor(rest / levels)) point[a] = centres[rest % levels];
    out.push(point);
  }
  return out;
}

/** Each coordinate rounded to the nearest multiple of the precision. */
export function quantise(v: Float64Array, precision: number): Float64Array {
  if (!(precision > 0)) throw new RangeError(`quantise: precision must be > 0 (got ${precision})`);
  return v.map((a) => Math.round(a / precision) * precision);
}
