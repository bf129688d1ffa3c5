import { providerFit } from '../models/learners/cv.ts';
import { checkRows, type Fitted, type Learner, type Rows64 } from '../models/learners/types.ts';

/**
 * A learning service: the user sends labels (and, where allowed, data), the provider trains its
 * private learner and releases what the scenario allows.
 *
 * Protocol I: the provider picks λ by cross-validation and keeps it secret.
 * Protocol II: the user names λ and the provider fits once with it.
 *
 * Stage I is a fit request; Stage II is prediction on new rows through a handle. Fits (k₁) and
 * predicted rows (k₂) are counted separately and each has a cap.
 */
export type Release = 'fitted' | 'handle' | 'params';
export type Protocol = 'I' | 'II';

export interface TrainingCaps {
  /** k₁: Stage I fit requests. */
  fits: number;
  /** k₂: Stage II rows predicted. */
  rows: number;
}

export interface TrainingServiceOptions {
  learner: Learner;
  /** The provider's private rows (Bob's X_B). Fits use them unless the request brings its own rows. */
  data?: Rows64;
  /** Whether a fit request may carry rows of its own (MLaaS: the user uploads a training set). */
  acceptsData?: boolean;
  protocol: Protocol;
  /** The provider's secret λ grid for Protocol I. */
  lambdas: readonly number[];
  folds?: number;
  seed?: number;
  releases: readonly Release[];
  caps?: Partial<TrainingCaps>;
}

export interface FitRequest {
  y: Float64Array;
  x?: Rows64;
  /** Protocol II only. */
  lambda?: number;
}

export interface FitResponse {
  /** Fitted values on the rows trained on (Stage I). */
  fitted?: Float64Array;
  /** Names the model for Stage II predictions. */
  handle?: string;
  params?: Float64Array;
}

export interface TrainingUsage {
  fits: number;
  rows: number;
  caps: TrainingCaps;
  /** The provider's computation: learner fits run (cross-validation included) and their seconds. */
  providerFits: number;
  providerSeconds: number;
}

/** What a client sees of a learning service, in-process or over HTTP. */
export interface TrainingApi {
  readonly learnerTask: Learner['task'];
  fit(request: FitRequest): Promise<FitResponse>;
  predict(handle: string, rows: Rows64): Promise<Float64Array>;
  usage(): Promise<TrainingUsage>;
}

/** A request the service refuses; `status` is the HTTP status the server answers with. */
export class TrainingApiError extends Error {
  constructor(
    readonly status: 400 | 404 | 429,
    message: string,
  ) {
    super(message);
    this.name = 'TrainingApiError';
  }
}

const RELEASES: readonly Release[] = ['fitted', 'handle', 'params'];

export class TrainingService implements TrainingApi {
  readonly learnerTask: Learner['task'];
  private readonly caps: TrainingCaps;
  private readonly folds: number;
  private readonly models = new Map<string, Fitted>();
  private fits = 0;
  private rows = 0;
  private providerFits = 0;
  private providerSeconds = 0;

  constructor(private readonly options: TrainingServiceOptions) {
    const { data, acceptsData, protocol, lambdas, releases } = options;
    if (!data && !acceptsData) throw new Error('a learning service needs private data, or must accept the user\'s');
    if (data) checkRows(data);
    if (protocol !== 'I' && protocol !== 'II') throw new Error(`unknown protocol "${protocol}" (I or II)`);
    if (protocol === 'I' && lambdas.length === 0) throw new Error('Protocol I needs a λ grid to cross-validate');
    for (const r of releases) if (!RELEASES.includes(r)) throw new Error(`unknown release "${r}" (${RELEASES.join(', ')})`);
    this.folds = options.folds ?? 5;
    if (protocol === 'I' && (!Number.isInteger(this.folds) || this.folds < 2)) throw new Error(`folds must be an integer ≥ 2, got ${options.folds}`);
    if (protocol === 'I' && data && data.n < this.folds) throw new Error(`Protocol I: ${this.folds}-fold cross-validation needs at least ${this.folds} private rows, got ${data.n}`);
    this.caps = { fits: options.caps?.fits ?? Infinity, rows: options.caps?.rows ?? Infinity };
    this.learnerTask = options.learner.task;
  }

  async fit(request: FitRequest): Promise<FitResponse> {
    const { learner, protocol, lambdas, releases } = this.options;
    const rows = this.trainingRows(request);
    const y = request.y;
    if (!(y instanceof Float64Array) || y.length !== rows.n) {
      throw new TrainingApiError(400, `labels: expected ${rows.n} values, got ${y?.length ?? 'none'}`);
    }
    for (let i = 0; i < y.length; i++) {
      if (!Number.isFinite(y[i])) throw new TrainingApiError(400, `labels: value ${i} is not a finite number`);
      if (learner.task === 'classification' && y[i] !== 1 && y[i] !== -1) {
        throw new TrainingApiError(400, `labels: value ${i} is ${y[i]}; a classification service takes ±1`);
      }
    }
    if (protocol === 'I' && request.lambda !== undefined) {
      throw new TrainingApiError(400, 'Protocol I: the provider chooses λ; do not send one');
    }
    if (protocol === 'II' && !(typeof request.lambda === 'number' && request.lambda >= 0 && Number.isFinite(request.lambda))) {
      throw new TrainingApiError(400, 'Protocol II: send λ, a finite number ≥ 0');
    }
    // Checked before the fit is counted: too few rows to cross-validate is the caller's mistake, not a spent fit.
    if (protocol === 'I' && rows.n < this.folds) {
      throw new TrainingApiError(400, `Protocol I: ${this.folds}-fold cross-validation needs at least ${this.folds} rows, got ${rows.n}`);
    }
    if (this.fits + 1 > this.caps.fits) throw new TrainingApiError(429, `Stage I cap reached: ${this.caps.fits} fits (k₁)`);
    this.fits++;

    const started = performance.now();
    let fitted: Fitted;
    if (protocol === 'I') {
      const result = providerFit(learner, rows, y, lambdas, { folds: this.folds, seed: this.options.seed });
      fitted = result.fitted;
      this.providerFits += result.fits;
    } else {
      fitted = learner.fit(rows, y, request.lambda!, { seed: this.options.seed });
      this.providerFits += 1;
    }
    this.providerSeconds += (performance.now() - started) / 1000;

    const response: FitResponse = {};
    if (releases.includes('fitted')) response.fitted = fitted.predict(rows);
    if (releases.includes('handle')) {
      const handle = `m${this.models.size + 1}`;
      this.models.set(handle, fitted);
      response.handle = handle;
    }
    if (releases.includes('params')) response.params = fitted.params.slice();
    return response;
  }

  async predict(handle: string, rows: Rows64): Promise<Float64Array> {
    const model = this.models.get(handle);
    if (!model) throw new TrainingApiError(404, `no model "${handle}"${this.options.releases.includes('handle') ? '' : ' (this service releases no handles)'}`);
    try {
      checkRows(rows);
    } catch (err) {
      throw new TrainingApiError(400, (err as Error).message);
    }
    if (this.rows + rows.n > this.caps.rows) {
      throw new TrainingApiError(429, `Stage II cap: ${rows.n} more rows would pass ${this.caps.rows} (k₂); ${this.caps.rows - this.rows} left`);
    }
    let out: Float64Array;
    try {
      out = model.predict(rows);
    } catch (err) {
      // Learners throw RangeError for rows of the wrong width: the caller's mistake, not ours.
      if (err instanceof RangeError) throw new TrainingApiError(400, err.message);
      throw err;
    }
    this.rows += rows.n;
    return out;
  }

  async usage(): Promise<TrainingUsage> {
    return {
      fits: this.fits,
      rows: this.rows,
      caps: { ...this.caps },
      providerFits: this.providerFits,
      providerSeconds: this.providerSeconds,
    };
  }

  private trainingRows(request: FitRequest): Rows64 {
    if (request.x) {
      if (!this.options.acceptsData) throw new TrainingApiError(400, 'this service trains on its own data; do not send rows');
      try {
        checkRows(request.x);
      } catch (err) {
        throw new TrainingApiError(400, (err as Error).message);
      }
      return request.x;
    }
    if (!this.options.data) throw new TrainingApiError(400, 'this service has no data of its own; send rows with the labels');
    return this.options.data;
  }
}
