import * as tf from '@tensorflow/tfjs';
import pLimit from 'p-limit';
import { validateDisclosure } from './disclosure.ts';
import { BudgetExceeded, type Answers64, type Disclosure, type Oracle } from './types.ts';
import { BINARY_TYPE, CLASSES_HEADER, decodeF32, encodeF32, JSON_TYPE, ROWS_HEADER } from './wire.ts';

export interface HttpOracleOptions {
  /** The server's base URL, e.g. http://127.0.0.1:8080. */
  url: string;
  model: string;
  /** The bearer token (the key in plain text). */
  key: string;
  /** Rows this oracle may ask for; checked here before anything is sent (the server checks its own). */
  budget: number;
  /** What the key is configured to disclose; the oracle does not choose it, it declares it. */
  disclosure: Disclosure;
  classes: number;
  inputShape: number[];
  /** Requests in flight at once, across all queries (default 4). */
  concurrency?: number;
  /** Rows per request (default 256). */
  batchSize?: number;
  /** Attempts per request on 429 and 5xx (default 6). */
  maxAttempts?: number;
  /** First backoff in ms, doubled per attempt (default 50); Retry-After wins when the server sends it. */
  backoffMs?: number;
  /** Longest single wait in ms (default 10,000). */
  maxWaitMs?: number;
}

/** A refusal other than 402 or one that outlived its retries; carries the HTTP status and the server's message. */
export class HttpOracleError extends Error {
  readonly name = 'HttpOracleError';
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function errorText(res: Response): Promise<{ message: string; remaining?: number }> {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: unknown; remaining?: unknown };
    return { message: String(body.error ?? text), remaining: typeof body.remaining === 'number' ? body.remaining : undefined };
  } catch {
    return { message: text || res.statusText };
  }
}

/**
 * An Oracle over the prediction service's binary encoding. A query is split into requests of
 * batchSize rows run with bounded concurrency. `spent` counts rows the server answered, so when a
 * query fails part-way (402 on a later batch, say) it still says exactly what the key has paid for.
 * 429 and 5xx are retried (the server charges neither); a network error is not, because the server
 * may have answered, and charged, a request whose answer was lost.
 */
export class HttpOracle implements Oracle {
  readonly budget: number;
  readonly disclosure: Disclosure;
  readonly classes: number;
  /** Requests answered (not rows). */
  requests = 0;
  /** Retries made after 429 or 5xx. */
  retries = 0;
  private answered = 0;
  private held = 0;
  private readonly endpoint: string;
  private readonly limit: ReturnType<typeof pLimit>;
  private readonly width: number;
  private readonly opts: Required<Pick<HttpOracleOptions, 'batchSize' | 'maxAttempts' | 'backoffMs' | 'maxWaitMs'>> & HttpOracleOptions;

  constructor(opts: HttpOracleOptions) {
    if (!Number.isInteger(opts.budget) || opts.budget < 0) throw new RangeError(`budget must be a non-negative integer, got ${opts.budget}`);
    validateDisclosure(opts.disclosure, opts.classes);
    const concurrency = opts.concurrency ?? 4;
    const batchSize = opts.batchSize ?? 256;
    if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
    if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
    this.opts = { maxAttempts: 6, backoffMs: 50, maxWaitMs: 10_000, ...opts, batchSize };
    this.budget = opts.budget;
    this.disclosure = opts.disclosure;
    this.classes = opts.classes;
    this.width = opts.inputShape.reduce((a, b) => a * b, 1);
    this.limit = pLimit(concurrency);
    this.endpoint = new URL(`/v1/models/${encodeURIComponent(opts.model)}/predict`, opts.url).href;
  }

  get spent(): number {
    return this.answered;
  }

  async query(x: tf.Tensor): Promise<tf.Tensor2D> {
    const want = this.opts.inputShape;
    const got = x.shape.slice(1);
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      throw new RangeError(`http oracle for model ${this.opts.model}: query rows must have shape [${want.join(', ')}], got [${got.join(', ')}] (query of shape [${x.shape.join(', ')}])`);
    }
    const n = x.shape[0];
    const out = new Float32Array(n * this.classes);
    await this.batched(n, async () => {
      const data = (await x.data()) as Float32Array;
      return async (start, rows) => {
        out.set(await this.requestBinary(data.subarray(start * this.width, (start + rows) * this.width), rows), start * this.classes);
      };
    });
    return tf.tensor2d(out, [n, this.classes]);
  }

  /** Float64 rows go as JSON (null for a missing feature), so answers keep what the server computed in float64. */
  async query64(x: Float64Array, n: number): Promise<Answers64> {
    if (x.length !== n * this.width) throw new RangeError(`http oracle for model ${this.opts.model}: ${x.length} values are not ${n} rows of ${this.width}`);
    const y = new Float64Array(n * this.classes);
    const leaves = this.disclosure.kind === 'leaf' ? new Int32Array(n) : undefined;
    await this.batched(n, async () => async (start, rows) => {
      const answer = await this.requestJson(x.subarray(start * this.width, (start + rows) * this.width), rows);
      y.set(answer.y, start * this.classes);
      if (leaves) {
        if (!answer.leaves) throw new HttpOracleError(200, `model ${this.opts.model}: the answer has no leaf identifiers, though the key is declared to give them`);
        leaves.set(answer.leaves, start);
      }
    });
    return leaves ? { y, leaves } : { y };
  }

  /**
   * Holds n rows of the budget, then runs the work that setup returns for each request-sized slice
   * with bounded concurrency. A refusal stops the slices not yet sent and is rethrown for the whole query.
   */
  private async batched(n: number, setup: () => Promise<(start: number, rows: number) => Promise<void>>): Promise<void> {
    if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`http oracle for model ${this.opts.model}: empty query (${n} rows)`);
    // Held synchronously, as the server does, so concurrent queries cannot overdraw the local budget.
    if (this.answered + this.held + n > this.budget) throw new BudgetExceeded(n, this.budget - this.answered - this.held);
    this.held += n;
    try {
      const work = await setup();
      const { batchSize } = this.opts;
      let failed = false;
      const jobs: Promise<void>[] = [];
      for (let start = 0; start < n; start += batchSize) {
        const rows = Math.min(batchSize, n - start);
        jobs.push(
          this.limit(async () => {
            if (failed) return; // a sibling was refused: do not spend more on a query that cannot be answered
            try {
              await work(start, rows);
            } catch (err) {
              failed = true;
              throw err;
            }
          }),
        );
      }
      const settled = await Promise.allSettled(jobs);
      const refused = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (refused) {
        // The caller asked for n rows; the server's remaining budget is what the refusal reports.
        const reason = refused.reason as Error;
        throw reason instanceof BudgetExceeded ? new BudgetExceeded(n, reason.remaining) : reason;
      }
    } finally {
      this.held -= n;
    }
  }

  private async requestBinary(rowsData: Float32Array, rows: number): Promise<Float32Array> {
    const res = await this.post({ 'content-type': BINARY_TYPE, [ROWS_HEADER]: String(rows) }, encodeF32(rowsData), rows);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const gotRows = Number(res.headers.get(ROWS_HEADER));
    const gotClasses = Number(res.headers.get(CLASSES_HEADER));
    if (gotRows !== rows || gotClasses !== this.classes || bytes.byteLength !== rows * this.classes * 4) {
      throw new HttpOracleError(res.status, `model ${this.opts.model}: answer of ${bytes.byteLength} bytes (${ROWS_HEADER} ${gotRows}, ${CLASSES_HEADER} ${gotClasses}) does not match ${rows} rows × ${this.classes} classes`);
    }
    this.count(rows);
    return decodeF32(bytes);
  }

  private async requestJson(rowsData: Float64Array, rows: number): Promise<Answers64> {
    const inputs = Array.from({ length: rows }, (_, r) => Array.from(rowsData.subarray(r * this.width, (r + 1) * this.width), (v) => (Number.isNaN(v) ? null : v)));
    const res = await this.post({ 'content-type': JSON_TYPE }, JSON.stringify({ inputs }), rows);
    const body = (await res.json().catch(() => undefined)) as { outputs?: unknown; leaves?: unknown } | undefined;
    const outputs = body?.outputs;
    const wellFormed = Array.isArray(outputs) && outputs.length === rows && outputs.every((o) => Array.isArray(o) && o.length === this.classes && o.every((v) => typeof v === 'number'));
    if (!wellFormed) throw new HttpOracleError(res.status, `model ${this.opts.model}: the JSON answer is not ${rows} rows of ${this.classes} numbers`);
    const leaves = body?.leaves;
    if (leaves !== undefined && !(Array.isArray(leaves) && leaves.length === rows && leaves.every(Number.isInteger))) {
      throw new HttpOracleError(res.status, `model ${this.opts.model}: "leaves" in the answer is not ${rows} integers`);
    }
    this.count(rows);
    return { y: Float64Array.from((outputs as number[][]).flat()), ...(leaves ? { leaves: Int32Array.from(leaves as number[]) } : {}) };
  }

  /** Counted the moment the server's answer is in hand: it has been charged for them. */
  private count(rows: number): void {
    this.answered += rows;
    this.requests++;
  }

  /** One request with retries on 429 and 5xx; resolves to the first OK response. */
  private async post(headers: Record<string, string>, body: BodyInit, rows: number): Promise<Response> {
    const { maxAttempts, backoffMs, maxWaitMs } = this.opts;
    for (let attempt = 1; ; attempt++) {
      const res = await fetch(this.endpoint, { method: 'POST', headers: { authorization: `Bearer ${this.opts.key}`, ...headers }, body });
      if (res.ok) return res;
      const { message, remaining } = await errorText(res);
      if (res.status === 402) throw new BudgetExceeded(rows, remaining ?? 0);
      const retryable = res.status === 429 || res.status >= 500;
      if (!retryable || attempt >= maxAttempts) {
        throw new HttpOracleError(res.status, `model ${this.opts.model}: HTTP ${res.status}${retryable ? ` after ${attempt} attempts` : ''}: ${message}`);
      }
      const retryAfter = Number(res.headers.get('retry-after'));
      const wait = Number.isFinite(retryAfter) && retryAfter >= 0 && res.headers.has('retry-after') ? retryAfter * 1000 : backoffMs * 2 ** (attempt - 1);
      this.retries++;
      await sleep(Math.min(maxWaitMs, wait));
    }
  }
}
