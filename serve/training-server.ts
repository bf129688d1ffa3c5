import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { z } from 'zod';
import type { Rows64 } from '../models/learners/types.ts';
import { bearerToken, hashKey } from './keys.ts';
import { TrainingApiError, type FitResponse, type TrainingApi, type TrainingUsage } from './training.ts';
import { answerClientErrors, GracefulClose, HttpError, readBody, serverUrl } from './http.ts';
import { JSON_TYPE, mediaType } from './wire.ts';

/**
 * The learning service over HTTP. Every body is JSON; float64 values travel as JSON numbers,
 * which JS writes in the shortest form that parses back to the same double, so values
 * round-trip bit for bit. The one double JSON.stringify loses is −0 (it writes 0), so float
 * arrays are written by float64Json, which keeps it. A non-finite value has no JSON form and
 * travels as null; the client reads null back as NaN.
 *
 * Rows are {n, d, x} with x the n·d values row-major, the same layout as Rows64, so nothing is
 * reshaped on either side.
 *
 *   POST /v1/fit      {y: number[], x?: {n, d, x}, lambda?: number} → {fitted?, handle?, params?}
 *   POST /v1/predict  {handle: string, rows: {n, d, x}}            → {predictions}
 *   GET  /v1/usage    → {fits, rows, caps: {fits, rows}, providerFits, providerSeconds} (an uncapped cap is null)
 *   GET  /v1/health   → {status: "ok", task}
 *
 * Errors are {error: message} with the status: 400 bad input (the message names the field),
 * 401 missing or wrong key, 404 unknown route or model handle, 405 wrong method, 413 body over
 * the limit, 415 not JSON, 429 a cap reached.
 */

export interface TrainingServerOptions {
  /** 0 (default) = any free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 16 MiB. */
  maxBodyBytes?: number;
  /**
   * sha256 (lowercase hex) of the one bearer key every route but /v1/health asks for. Caps and
   * usage belong to the service, so a service has one caller; without a hash the routes are open.
   */
  keySha256?: string;
  /** Startup lines and server errors; never carries a key. */
  log?(message: string): void;
}

export interface RunningTrainingServer {
  url: string;
  port: number;
  /** Stops accepting and lets requests in flight finish. Safe to call more than once. */
  close(): Promise<void>;
}

export const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;

// ---- wire format (shared with the client) ----

/** A JSON array of the values that parses back to the same doubles, −0 included; non-finite values as null. */
export function float64Json(values: ArrayLike<number>): string {
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    parts[i] = Object.is(v, -0) ? '-0' : Number.isFinite(v) ? String(v) : 'null';
  }
  return `[${parts.join(',')}]`;
}

/**
 * JSON of plain objects, strings and numbers where every number, loose or in a Float64Array, keeps
 * its exact double (−0 included); undefined fields are left out.
 */
export function encodeJson(value: unknown): string {
  if (value instanceof Float64Array) return float64Json(value);
  if (typeof value === 'number') return float64Json([value]).slice(1, -1);
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const fields: string[] = [];
    for (const [k, v] of Object.entries(value)) if (v !== undefined) fields.push(`${JSON.stringify(k)}:${encodeJson(v)}`);
    return `{${fields.join(',')}}`;
  }
  return JSON.stringify(value);
}

const finite = z.number({
  error: (issue) => `expected a finite number, got ${issue.input === undefined ? 'nothing' : typeof issue.input === 'number' ? String(issue.input) : JSON.stringify(issue.input)?.slice(0, 40)}`,
});

export const rowsWire = z
  .strictObject({
    n: z.number().int().min(1),
    d: z.number().int().min(1),
    /** n·d values, row-major. */
    x: z.array(finite),
  })
  .superRefine((rows, ctx) => {
    if (rows.x.length !== rows.n * rows.d) ctx.addIssue({ code: 'custom', path: ['x'], message: `has ${rows.x.length} values, expected n·d = ${rows.n * rows.d}` });
  });

export const fitRequestWire = z.strictObject({
  /** Labels, one per training row. */
  y: z.array(finite),
  /** The user's own rows, where the service accepts data. */
  x: rowsWire.optional(),
  /** Protocol II only; whether it is allowed and in range is the service's call. */
  lambda: finite.optional(),
});

export const predictRequestWire = z.strictObject({
  handle: z.string().min(1).max(200),
  rows: rowsWire,
});

/** Answers may carry null where the service computed a non-finite value. */
const answerValues = z.array(z.number().nullable());

export const fitResponseWire = z.strictObject({
  fitted: answerValues.optional(),
  handle: z.string().optional(),
  params: answerValues.optional(),
});

export const predictResponseWire = z.strictObject({ predictions: answerValues });

const cap = z.number().nonnegative().nullable();
export const usageWire = z.strictObject({
  fits: z.number().int().nonnegative(),
  rows: z.number().int().nonnegative(),
  caps: z.strictObject({ fits: cap, rows: cap }),
  providerFits: z.number().int().nonnegative(),
  providerSeconds: z.number().nonnegative(),
});

export const healthWire = z.strictObject({ status: z.literal('ok'), task: z.enum(['regression', 'classification']) });

/** ['x', 'x', 3] → "x.x[3]": the field as the caller wrote it. */
export function fieldName(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(body)';
}

export function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .slice(0, 5)
    .map((i) => `${fieldName(i.path)}: ${i.message}`)
    .concat(issues.length > 5 ? [`and ${issues.length - 5} more`] : [])
    .join('; ');
}

export const toFloat64 = (values: readonly (number | null)[]): Float64Array => Float64Array.from(values, (v) => (v === null ? NaN : v));

const toRows = (rows: z.output<typeof rowsWire>): Rows64 => ({ n: rows.n, d: rows.d, x: Float64Array.from(rows.x) });

/** Usage with uncapped (Infinity) caps as null, which is what JSON.stringify would write anyway, but on purpose. */
export function usageJson(u: TrainingUsage): z.output<typeof usageWire> {
  const capJson = (c: number) => (Number.isFinite(c) ? c : null);
  return { ...u, caps: { fits: capJson(u.caps.fits), rows: capJson(u.caps.rows) } };
}

// ---- server ----


const ROUTES: Record<string, 'GET' | 'POST'> = {
  '/v1/fit': 'POST',
  '/v1/predict': 'POST',
  '/v1/usage': 'GET',
  '/v1/health': 'GET',
};
const ROUTE_HELP = Object.entries(ROUTES)
  .map(([path, method]) => `${method} ${path}`)
  .join(', ');


async function readJson<S extends z.ZodType>(req: IncomingMessage, schema: S, limit: number): Promise<z.output<S>> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) throw new HttpError(413, `request body of ${declared} bytes is over the limit of ${limit} bytes`, {}, { connection: 'close' });
  const type = mediaType(req.headers['content-type']);
  if (type !== JSON_TYPE) throw new HttpError(415, `content type ${JSON.stringify(req.headers['content-type'] ?? null)} is not accepted: send ${JSON_TYPE}`);
  const body = await readBody(req, limit);
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new HttpError(400, `malformed JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new HttpError(400, 'the body must be a JSON object');
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new HttpError(400, describeIssues(parsed.error.issues));
  return parsed.data;
}

export async function startTrainingServer(api: TrainingApi, opts: TrainingServerOptions = {}): Promise<RunningTrainingServer> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const limit = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  if (!(Number.isInteger(limit) && limit > 0)) throw new RangeError(`maxBodyBytes must be a positive integer, got ${limit}`);
  if (opts.keySha256 !== undefined && !/^[0-9a-f]{64}$/.test(opts.keySha256)) throw new RangeError('keySha256 must be 64 lowercase hex digits');
  const keyDigest = opts.keySha256 === undefined ? undefined : Buffer.from(opts.keySha256, 'hex');

  const lifecycle = new GracefulClose();

  function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    res.writeHead(status, {
      'content-type': `${JSON_TYPE}; charset=utf-8`,
      'content-length': Buffer.byteLength(body),
      ...headers,
      // While closing, every answer asks the client to hang up, so keep-alive connections do not hold the close open.
      ...(lifecycle.closing ? { connection: 'close' } : {}),
    });
    res.end(body);
  }

  function authenticate(req: IncomingMessage): void {
    if (!keyDigest) return;
    const token = bearerToken(req.headers.authorization);
    if (token === undefined) {
      const message = req.headers.authorization ? 'the Authorization header must be "Bearer <key>"' : 'missing API key: send "Authorization: Bearer <key>"';
      throw new HttpError(401, message, {}, { 'www-authenticate': 'Bearer' });
    }
    if (!timingSafeEqual(Buffer.from(hashKey(token), 'hex'), keyDigest)) throw new HttpError(401, 'unknown API key', {}, { 'www-authenticate': 'Bearer' });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (lifecycle.closing) throw new HttpError(503, 'the server is shutting down', {}, { connection: 'close' });
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const method = Object.hasOwn(ROUTES, path) ? ROUTES[path] : undefined;
    if (!method) throw new HttpError(404, `no route ${path}: use ${ROUTE_HELP}`);
    if (req.method !== method) throw new HttpError(405, `${path} takes ${method}, not ${req.method}`, {}, { allow: method });
    if (path === '/v1/health') return send(res, 200, JSON.stringify({ status: 'ok', task: api.learnerTask }));
    authenticate(req);
    if (path === '/v1/usage') return send(res, 200, JSON.stringify(usageJson(await api.usage())));
    if (path === '/v1/fit') {
      const body = await readJson(req, fitRequestWire, limit);
      const answer: FitResponse = await api.fit({ y: Float64Array.from(body.y), x: body.x && toRows(body.x), lambda: body.lambda });
      return send(res, 200, encodeJson(answer));
    }
    const body = await readJson(req, predictRequestWire, limit);
    const predictions = await api.predict(body.handle, toRows(body.rows));
    send(res, 200, encodeJson({ predictions }));
  }

  const server = createServer((req, res) => {
    void lifecycle.track(
      handle(req, res)
        .catch((err: unknown) => {
          if (res.headersSent || res.destroyed) return;
          if (err instanceof HttpError) return send(res, err.status, JSON.stringify({ error: err.message }), err.headers);
          if (err instanceof TrainingApiError) return send(res, err.status, JSON.stringify({ error: err.message }));
          log(`training server error on ${req.method} ${req.url}: ${(err as Error)?.stack ?? String(err)}`);
          send(res, 500, JSON.stringify({ error: 'internal error' }));
        })
        .catch((err: unknown) => log(`could not answer ${req.method} ${req.url}: ${String(err)}`)),
    );
  });
  answerClientErrors(server);

  const host = opts.host ?? '127.0.0.1';
  const wanted = opts.port ?? 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(wanted, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err) => {
    throw new Error(`cannot listen on ${host}:${wanted}: ${(err as Error).message}`);
  });
  const { url, port } = serverUrl(server, host);

  const close = () => lifecycle.close(server);
  return { url, port, close };
}
