import type { z } from 'zod';
import type { Rows64 } from '../models/learners/types.ts';
import { TrainingApiError, type FitRequest, type FitResponse, type TrainingApi, type TrainingUsage } from './training.ts';
import { encodeJson, fitResponseWire, healthWire, predictResponseWire, describeIssues, toFloat64, usageWire } from './training-server.ts';
import { JSON_TYPE } from './wire.ts';

export interface HttpTrainingApiOptions {
  /** The server's base URL, e.g. http://127.0.0.1:8090. */
  url: string;
  /** The bearer key in plain text, where the server asks for one. */
  key?: string;
}

/**
 * A refusal that TrainingApiError has no status for: 401, 405, 413, 415, 5xx. These are faults
 * of the transport or the deployment, not answers the service itself gives.
 */
export class TrainingHttpError extends Error {
  readonly name = 'TrainingHttpError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const SERVICE_STATUSES = [400, 404, 429] as const;
type ServiceStatus = (typeof SERVICE_STATUSES)[number];
const isServiceStatus = (s: number): s is ServiceStatus => (SERVICE_STATUSES as readonly number[]).includes(s);

const rowsJson = (rows: Rows64) => ({ n: rows.n, d: rows.d, x: rows.x instanceof Float64Array ? rows.x : Float64Array.from(rows.x) });

/**
 * TrainingApi over HTTP (serve/training-server.ts). The service's own refusals (400, 404, 429)
 * come back as TrainingApiError with the server's status and message, so a caller cannot tell
 * this from the in-process service; nothing is retried, since a fit is not free to repeat.
 */
export class HttpTrainingApi implements TrainingApi {
  readonly learnerTask: TrainingApi['learnerTask'];
  private readonly base: string;
  private readonly key?: string;

  constructor(opts: HttpTrainingApiOptions & { learnerTask: TrainingApi['learnerTask'] }) {
    this.base = opts.url;
    this.key = opts.key;
    this.learnerTask = opts.learnerTask;
  }

  /** Asks the server's /v1/health which task the service learns, then makes the client. */
  static async connect(opts: HttpTrainingApiOptions): Promise<HttpTrainingApi> {
    const health = await call(opts.url, '/v1/health', healthWire, { method: 'GET' });
    return new HttpTrainingApi({ ...opts, learnerTask: health.task });
  }

  async fit(request: FitRequest): Promise<FitResponse> {
    const text = encodeJson({ y: Float64Array.from(request.y), x: request.x && rowsJson(request.x), lambda: request.lambda });
    const answer = await this.post('/v1/fit', text, fitResponseWire);
    const out: FitResponse = {};
    if (answer.fitted) out.fitted = toFloat64(answer.fitted);
    if (answer.handle !== undefined) out.handle = answer.handle;
    if (answer.params) out.params = toFloat64(answer.params);
    return out;
  }

  async predict(handle: string, rows: Rows64): Promise<Float64Array> {
    const text = encodeJson({ handle, rows: rowsJson(rows) });
    return toFloat64((await this.post('/v1/predict', text, predictResponseWire)).predictions);
  }

  async usage(): Promise<TrainingUsage> {
    const u = await call(this.base, '/v1/usage', usageWire, { method: 'GET', headers: this.auth() });
    return { ...u, caps: { fits: u.caps.fits ?? Infinity, rows: u.caps.rows ?? Infinity } };
  }

  private auth(): Record<string, string> {
    return this.key === undefined ? {} : { authorization: `Bearer ${this.key}` };
  }

  private post<S extends z.ZodType>(path: string, body: string, schema: S): Promise<z.output<S>> {
    return call(this.base, path, schema, { method: 'POST', body, headers: { ...this.auth(), 'content-type': JSON_TYPE } });
  }
}

async function call<S extends z.ZodType>(base: string, path: string, schema: S, init: RequestInit): Promise<z.output<S>> {
  const res = await fetch(new URL(path, base), init);
  const text = await res.text();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (!res.ok) {
    const error = (value as { error?: unknown } | undefined)?.error;
    const message = typeof error === 'string' ? error : text || res.statusText;
    if (isServiceStatus(res.status)) throw new TrainingApiError(res.status, message);
    throw new TrainingHttpError(res.status, `${path}: HTTP ${res.status}: ${message}`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new TrainingHttpError(res.status, `${path}: the server's answer is not what a training server sends: ${describeIssues(parsed.error.issues)}`);
  return parsed.data;
}
