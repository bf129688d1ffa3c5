import { ridge } from '../models/learners/ridge.ts';
import { checkRows, type Fitted, type Learner, type Rows64 } from '../models/learners/types.ts';
import { TrainingApiError, TrainingService, type TrainingApi, type TrainingCaps } from './training.ts';

/**
 * Assisted learning (Xian, Wang, Ding & Ghanadan, NeurIPS 2020) between two parties who hold
 * different features of the same individuals, rows aligned:
 *
 *   Alice holds X_A and the labels y; Bob holds X_B and a private learner behind a TrainingApi.
 *   Each round Alice fits her learner to the current residual, sends what is left to Bob as
 *   labels (Stage I), Bob fits his learner on X_B to them and returns his fitted values; both are
 *   subtracted. Rounds go on until the monitored error improves by less than `tolerance`
 *   (relative), Bob refuses (his cap), or `maxRounds` is reached.
 *
 *   For new individuals (Stage II) the prediction is the sum over rounds of Alice's round model on
 *   her rows plus Bob's round model on his rows, the latter through his handles — so Bob counts
 *   rows × rounds of Stage II.
 *
 * With least squares on both sides, one round is one step of alternating projections onto
 * col([1, X_A]) and col([1, X_B]); the residual converges to the joint least-squares residual.
 */

export interface AssistedParty {
  /** Alice's features of the training individuals. */
  rows: Rows64;
  /** Her learner (default: ridge, i.e. least squares at λ = 0). */
  learner?: Learner;
  lambda?: number;
}

/** Held-out individuals both parties know: Alice's rows, Bob's rows (aligned) and the labels. */
export interface AssistedValidation {
  alice: Rows64;
  bob: Rows64;
  y: Float64Array;
}

export interface AssistedOptions {
  alice: AssistedParty;
  /** Bob's learning service over his X_B; it must release 'fitted' and 'handle'. */
  bob: TrainingApi;
  /** λ sent with each request when Bob's service runs Protocol II; leave it out for Protocol I. */
  bobLambda?: number;
  y: Float64Array;
  maxRounds: number;
  /** Stop when (previous − current) / previous of the monitored error falls below this. */
  tolerance: number;
  /** When given, the validation error is monitored (and costs Bob Stage II rows each round); else the training error. */
  validation?: AssistedValidation;
}

export type AssistedStop = 'tolerance' | 'max-rounds' | 'bob-cap';

export interface AssistedRound {
  round: number;
  alice: Fitted;
  /** Alice's fitted values on the training individuals this round. */
  aliceFitted: Float64Array;
  /** Bob's fitted values on the training individuals this round (his Stage I answer). */
  bobFitted: Float64Array;
  bobHandle: string;
}

export interface AssistedPoint {
  /** 0 is before any fit (predicting 0). */
  round: number;
  /** Mean squared residual on the training individuals. */
  train: number;
  validation: number | null;
}

export interface AssistedResult {
  rounds: AssistedRound[];
  trajectory: AssistedPoint[];
  stop: AssistedStop;
  /** Rounds the predictor sums: 1..used, where the monitored error was lowest (0 means none helped). */
  used: number;
  /** In-sample prediction of the rounds used. */
  fitted: Float64Array;
  /** Stage II: Alice's and Bob's rows of the same new individuals. */
  predict(rows: { alice: Rows64; bob: Rows64 }): Promise<Float64Array>;
}

/**
 * The default Bob: ridge (λ = 0 is least squares) behind a Protocol II service that releases
 * fitted values and handles. Spread the result into assistedLearning's options.
 */
export function ridgeAssistant(rows: Rows64, opts: { lambda?: number; caps?: Partial<TrainingCaps> } = {}): { bob: TrainingService; bobLambda: number } {
  const bob = new TrainingService({ learner: ridge, data: rows, protocol: 'II', lambdas: [], releases: ['fitted', 'handle'], caps: opts.caps });
  return { bob, bobLambda: opts.lambda ?? 0 };
}

const meanSquare = (r: Float64Array) => r.reduce((s, v) => s + v * v, 0) / r.length;

function checkAligned(what: string, alice: Rows64, bob: Rows64, y?: Float64Array): void {
  checkRows(alice, y);
  checkRows(bob, y);
  if (alice.n !== bob.n) throw new RangeError(`${what}: Alice has ${alice.n} rows and Bob ${bob.n}; rows must be the same individuals`);
}

export async function assistedLearning(options: AssistedOptions): Promise<AssistedResult> {
  const { bob, y, maxRounds, tolerance, validation, bobLambda } = options;
  const aliceRows = options.alice.rows;
  const aliceLearner = options.alice.learner ?? ridge;
  const aliceLambda = options.alice.lambda ?? 0;
  checkRows(aliceRows, y);
  if (!Number.isInteger(maxRounds) || maxRounds < 1) throw new RangeError(`maxRounds must be an integer ≥ 1 (got ${maxRounds})`);
  if (!(tolerance >= 0)) throw new RangeError(`tolerance must be ≥ 0 (got ${tolerance})`);
  if (aliceLearner.task !== 'regression' || bob.learnerTask !== 'regression') {
    throw new Error('assisted learning fits residuals: both learners must be regression learners');
  }
  if (validation) checkAligned('validation', validation.alice, validation.bob, validation.y);

  const n = y.length;
  let residual = Float64Array.from(y);
  const validationPrediction = validation ? new Float64Array(validation.y.length) : undefined;
  const validationError = () => {
    if (!validation || !validationPrediction) return null;
    let e = 0;
    for (let i = 0; i < validation.y.length; i++) e += (validation.y[i] - validationPrediction[i]) ** 2;
    return e / validation.y.length;
  };
  const trajectory: AssistedPoint[] = [{ round: 0, train: meanSquare(residual), validation: validationError() }];
  const monitored = (p: AssistedPoint) => p.validation ?? p.train;
  const rounds: AssistedRound[] = [];
  let stop: AssistedStop = 'max-rounds';

  for (let round = 1; round <= maxRounds; round++) {
    const alice = aliceLearner.fit(aliceRows, residual, aliceLambda);
    const aliceFitted = alice.predict(aliceRows);
    const sent = new Float64Array(n);
    for (let i = 0; i < n; i++) sent[i] = residual[i] - aliceFitted[i];

    let bobFitted: Float64Array;
    let bobHandle: string;
    let bobValidation: Float64Array | undefined;
    try {
      const answer = await bob.fit(bobLambda === undefined ? { y: sent } : { y: sent, lambda: bobLambda });
      if (!answer.fitted || !answer.handle) throw new Error("assisted learning needs Bob's service to release 'fitted' and 'handle'");
      if (answer.fitted.length !== n) throw new RangeError(`Bob returned ${answer.fitted.length} fitted values for ${n} individuals`);
      bobFitted = answer.fitted;
      bobHandle = answer.handle;
      if (validation) bobValidation = await bob.predict(bobHandle, validation.bob);
    } catch (err) {
      // A cap ends the protocol with what was finished; this round's half is dropped.
      if (err instanceof TrainingApiError && err.status === 429) {
        stop = 'bob-cap';
        break;
      }
      throw err;
    }

    for (let i = 0; i < n; i++) residual[i] = sent[i] - bobFitted[i];
    if (validation && validationPrediction && bobValidation) {
      const aliceValidation = alice.predict(validation.alice);
      for (let i = 0; i < validationPrediction.length; i++) validationPrediction[i] += aliceValidation[i] + bobValidation[i];
    }
    rounds.push({ round, alice, aliceFitted, bobFitted, bobHandle });
    const point: AssistedPoint = { round, train: meanSquare(residual), validation: validationError() };
    const previous = monitored(trajectory[trajectory.length - 1]);
    trajectory.push(point);
    const gain = previous > 0 ? (previous - monitored(point)) / previous : 0;
    if (gain < tolerance) {
      stop = 'tolerance';
      break;
    }
  }

  // A last round that made the monitored error worse (possible on validation) is not used.
  let used = 0;
  for (const p of trajectory) if (monitored(p) < monitored(trajectory[used])) used = p.round;
  const kept = rounds.slice(0, used);
  const fitted = new Float64Array(n);
  for (const r of kept) for (let i = 0; i < n; i++) fitted[i] += r.aliceFitted[i] + r.bobFitted[i];

  return {
    rounds,
    trajectory,
    stop,
    used,
    fitted,
    async predict(rows) {
      checkAligned('prediction', rows.alice, rows.bob);
      const out = new Float64Array(rows.alice.n);
      for (const r of kept) {
        const a = r.alice.predict(rows.alice);
        const b = await bob.predict(r.bobHandle, rows.bob);
        for (let i = 0; i < out.length; i++) out[i] += a[i] + b[i];
      }
      return out;
    },
  };
}
