import * as tf from '@tensorflow/tfjs';
import pLimit from 'p-limit';
import { validateDisclosure } from './disclosure.ts';
import { BudgetExceeded, type Disclosure, type Oracle } from './types.ts';
import { BINARY_TYPE, CLASSES_HEADER, decodeF32, encodeF32, ROWS_HEADER } from './wire.ts';

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
    if (n === 0) throw new RangeError(`http oracle for model ${this.opts.model}: empty query (0 rows)`);
    // Held synchronously, as the server does, so concurrent queries cannot overdraw the local budget.
    if (this.answered + this.held + n > this.budget) throw new BudgetExceeded(n, this.budget - this.answered - this.held);
    this.held += n;
    try {
      const data = (await x.data()) as Float32Array;
      const out = new Float32Array(n * this.classes);
      const { batchSize } = this.opts;
      let failed = false;
      const jobs: Promise<void>[] = [];
      for (let start = 0; start < n; start += batchSize) {
        const rows = Math.min(batchSize, n - start);
        jobs.push(
          this.limit(async () => {
            if (failed) return; // a sibling was refused: do not spend more on a query that cannot be answered
            try {
              const answer = await this.request(data.subarray(start * this.width, (start + rows) * this.width), rows);
              out.set(answer, start * this.classes);
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
      return tf.tensor2d(out, [n, this.classes]);
    } finally {
      this.held -= n;
    }
  }

  /** One request with retries; resolves to rows × classes answers and counts them. */
  private async request(rowsData: Float32Array, rows: number): Promise<Float32Array> {
    const body = encodeF32(rowsData);
    const { maxAttempts, backoffMs, maxWaitMs } = this.opts;
    for (let attempt = 1; ; attempt++) {
      const res = await fetch(this.endpoint, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.opts.key}`, 'content-type': BINARY_TYPE, [ROWS_HEADER]: String(rows) },
        body,
      });
      if (res.ok) {
        const bytes = new Uint8Array(await res.arrayBuffer());
        const gotRows = Number(res.headers.get(ROWS_HEADER));
        const gotClasses = Number(res.headers.get(CLASSES_HEADER));
        if (gotRows !== rows || gotClasses !== this.classes || bytes.byteLength !== rows * this.classes * 4) {
          throw new HttpOracleError(res.status, `model ${this.opts.model}: answer of ${bytes.byteLength} bytes (${ROWS_HEADER} ${gotRows}, ${CLASSES_HEADER} ${gotClasses}) does not match ${rows} rows × ${this.classes} classes`);
        }
        // Counted the moment the server's answer is in hand: it has been charged for them.
        this.answered += rows;
        this.requests++;
        return decodeF32(bytes);
      }
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
