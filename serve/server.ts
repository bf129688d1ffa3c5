import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import * as tf from '@tensorflow/tfjs';
import { defaultCacheDir, loadDataset } from '../datasets/index.ts';
import { getTarget } from '../models/targets/index.ts';
import type { Target } from '../models/types.ts';
import type { ServeConfig } from './config.ts';
import { describeDisclosure } from './disclosure.ts';
import { answerRows64, answerTensor } from './oracle.ts';
import { allowsModel, bearerToken, KeyRing, type ApiKey } from './keys.ts';
import { Ledger } from './ledger.ts';
import { TokenBucket } from './rate-limit.ts';
import { answerClientErrors, GracefulClose, HttpError, readBody, serverUrl } from './http.ts';
import { BINARY_TYPE, CLASSES_HEADER, decodeF32, encodeF32, firstNonFinite, JSON_TYPE, mediaType, ROWS_HEADER } from './wire.ts';

export interface ServerOptions {
  /** Where datasets and trained targets are cached (default: defaultCacheDir()). */
  cacheDir?: string;
  /** Overrides config.port (0 = any free port). */
  port?: number;
  /** Startup lines, ledger warnings and server errors; never carries a key. */
  log?(message: string): void;
  /**
   * Holds every answer this long after the model has run (default 0): a slower model, for tests and
   * load experiments that need requests to overlap between the budget check and the answer.
   */
  answerDelayMs?: number;
}

export interface RunningServer {
  url: string;
  port: number;
  /** Stops accepting, lets requests in flight finish, flushes the ledger and frees the targets. */
  close(): Promise<void>;
}


interface Batch {
  /** float64 for JSON rows bound for a target that computes in float64 (NaN = missing); float32 otherwise. */
  data: Float32Array | Float64Array;
  rows: number;
  binary: boolean;
}

const PREDICT = /^\/v1\/models\/([^/]+)\/predict$/;

function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': `${JSON_TYPE}; charset=utf-8`, 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}


/**
 * JSON rows. For a target that computes in float64 the values are kept as JSON gives them, and
 * null marks a missing feature where the target takes incomplete queries; otherwise each value
 * must be a finite float32, as on the binary path.
 */
function rowsFromJson(body: Buffer, target: Target, maxRows: number): Batch {
  const width = target.inputShape.reduce((a, b) => a * b, 1);
  const shape = `[${target.inputShape.join(', ')}]`;
  const exact = target.predictProba64 !== undefined;
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new HttpError(400, `malformed JSON: ${(err as Error).message}`);
  }
  const inputs = (value as { inputs?: unknown } | null)?.inputs;
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !Array.isArray(inputs)) {
    throw new HttpError(400, 'body must be a JSON object {"inputs": [[...row...], ...]}');
  }
  const rows = inputs.length;
  if (rows === 0) throw new HttpError(400, 'empty batch: "inputs" has no rows');
  if (rows > maxRows) throw new HttpError(413, `${rows} rows is more than the ${maxRows} allowed per request`);
  const data = exact ? new Float64Array(rows * width) : new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    const row = inputs[r] as unknown;
    if (!Array.isArray(row)) throw new HttpError(400, `inputs[${r}] is not an array of numbers`);
    if (row.length !== width) throw new HttpError(400, `inputs[${r}] has ${row.length} values; this model takes rows of ${width} (shape ${shape}, flattened)`);
    for (let c = 0; c < width; c++) {
      const v = row[c] as unknown;
      if (v === null && target.acceptsMissing) {
        data[r * width + c] = NaN;
        continue;
      }
      if (typeof v !== 'number') {
        const hint = v === null ? ` (model "${target.id}" takes only complete rows)` : '';
        throw new HttpError(400, `inputs[${r}][${c}] is not a number: ${JSON.stringify(v)?.slice(0, 40)}${hint}`);
      }
      const f = exact ? v : Math.fround(v);
      // JSON has no NaN, but 1e999 parses to Infinity and 1e300 overflows float32.
      if (!Number.isFinite(f)) throw new HttpError(400, `inputs[${r}][${c}] is not a finite ${exact ? 'number' : 'float32'}: ${v}`);
      data[r * width + c] = f;
    }
  }
  return { data, rows, binary: false };
}

async function rowsFromBinary(req: IncomingMessage, width: number, maxRows: number, maxBytes: number): Promise<Batch> {
  const header = req.headers[ROWS_HEADER];
  const rows = typeof header === 'string' && /^\d+$/.test(header.trim()) ? Number(header) : NaN;
  if (!Number.isSafeInteger(rows)) throw new HttpError(400, `binary input needs a ${ROWS_HEADER} header with the row count, got ${JSON.stringify(header ?? null)}`);
  if (rows === 0) throw new HttpError(400, `empty batch: ${ROWS_HEADER} is 0`);
  if (rows > maxRows) throw new HttpError(413, `${rows} rows is more than the ${maxRows} allowed per request`);
  const expected = rows * width * 4;
  if (expected > maxBytes) throw new HttpError(413, `${rows} rows of ${width} float32 values are ${expected} bytes, over the limit of ${maxBytes} bytes`);
  const body = await readBody(req, expected);
  if (body.length !== expected) {
    throw new HttpError(400, `body has ${body.length} bytes; ${ROWS_HEADER}: ${rows} rows of ${width} little-endian float32 values need ${expected}`);
  }
  const data = decodeF32(body);
  const bad = firstNonFinite(data);
  if (bad >= 0) throw new HttpError(400, `row ${Math.floor(bad / width)}, value ${bad % width} is ${data[bad]}: inputs must be finite`);
  return { data, rows, binary: true };
}

/**
 * Starts the prediction service: loads (or trains) the configured targets, opens the ledger and listens.
 * Routes, all behind `Authorization: Bearer <key>`: GET /v1/models, POST /v1/models/{id}/predict, GET /v1/usage.
 */
export async function startServer(config: ServeConfig, opts: ServerOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? ((m: string) => console.error(m));
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const dataset = await loadDataset(config.dataset, cacheDir);
  const targets = new Map<string, Target>();
  const ledger = await Ledger.open(config.ledger, log);
  try {
    for (const spec of config.targets) targets.set(spec.id, await getTarget(spec, dataset, { cacheDir, log }));
  } catch (err) {
    for (const t of targets.values()) t.dispose();
    await ledger.close();
    throw err;
  }
  const ring = new KeyRing(config.keys);
  const buckets = new Map(config.keys.map((k) => [k.name, new TokenBucket(k.rateLimit.requestsPerSecond, k.rateLimit.burst)]));

  const lifecycle = new GracefulClose();
  // While closing, every answer asks the client to hang up, so keep-alive connections do not hold the close open.
  const send = (res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}) =>
    sendJson(res, status, value, lifecycle.closing ? { ...headers, connection: 'close' } : headers);

  function authenticate(req: IncomingMessage): ApiKey {
    const header = req.headers.authorization;
    const token = bearerToken(header);
    if (token === undefined) {
      throw new HttpError(401, header ? 'the Authorization header must be "Bearer <key>"' : 'missing API key: send "Authorization: Bearer <key>"', {}, { 'www-authenticate': 'Bearer' });
    }
    const key = ring.lookup(token);
    if (!key) throw new HttpError(401, 'unknown API key', {}, { 'www-authenticate': 'Bearer' });
    const turn = buckets.get(key.name)!.take();
    if (!turn.ok) {
      const seconds = Math.max(1, Math.ceil(turn.retryAfterS));
      throw new HttpError(429, `rate limit of ${key.rateLimit.requestsPerSecond} requests/s (burst ${key.rateLimit.burst}) exceeded for key "${key.name}"`, { retryAfter: turn.retryAfterS }, { 'retry-after': String(seconds) });
    }
    return key;
  }

  function usage(key: ApiKey) {
    return {
      key: key.name,
      budget: key.budget,
      spent: ledger.spent(key.name),
      inFlight: ledger.inFlight(key.name),
      remaining: ledger.remaining(key.name, key.budget),
      disclosure: describeDisclosure(key.disclosure),
    };
  }

  async function predict(req: IncomingMessage, res: ServerResponse, key: ApiKey, id: string): Promise<void> {
    const target = targets.get(id);
    if (!target) throw new HttpError(404, `unknown model "${id}": GET /v1/models lists them`);
    if (!allowsModel(key, id)) throw new HttpError(403, `key "${key.name}" may not use model "${id}"`);
    if (key.disclosure.kind === 'leaf' && !target.leafIds) throw new HttpError(400, `key "${key.name}" is answered with leaf identifiers, but model "${id}" (${target.family}) has no leaves`);
    const width = target.inputShape.reduce((a, b) => a * b, 1);
    const declared = Number(req.headers['content-length']);
    if (declared > config.maxBodyBytes) throw new HttpError(413, `request body of ${declared} bytes is over the limit of ${config.maxBodyBytes} bytes`, {}, { connection: 'close' });
    const type = mediaType(req.headers['content-type']);
    let batch: Batch;
    if (type === JSON_TYPE) batch = rowsFromJson(await readBody(req, config.maxBodyBytes), target, config.maxRowsPerRequest);
    else if (key.disclosure.kind === 'leaf' && type === BINARY_TYPE) throw new HttpError(415, `key "${key.name}" is answered with leaf identifiers, which come only in JSON: send ${JSON_TYPE}`);
    else if (type === BINARY_TYPE) batch = await rowsFromBinary(req, width, config.maxRowsPerRequest, config.maxBodyBytes);
    else throw new HttpError(415, `content type ${JSON.stringify(req.headers['content-type'] ?? null)} is not accepted: send ${JSON_TYPE} or ${BINARY_TYPE}`);

    // Check and hold in one synchronous step: no other request can pass the check with the same rows.
    const held = ledger.reserve(key.name, batch.rows, key.budget);
    if (!held) {
      const remaining = ledger.remaining(key.name, key.budget);
      throw new HttpError(402, `query of ${batch.rows} rows refused: only ${remaining} of key "${key.name}"'s budget of ${key.budget} remain`, { remaining });
    }
    try {
      let values: Float32Array | Float64Array;
      let leaves: Int32Array | undefined;
      if (batch.data instanceof Float64Array) {
        ({ y: values, leaves } = await answerRows64(target, batch.data, batch.rows, key.disclosure));
      } else {
        const rows = tf.tensor(batch.data, [batch.rows, ...target.inputShape]);
        const answer = await answerTensor(target, rows, key.disclosure).finally(() => rows.dispose());
        try {
          values = (await answer.data()) as Float32Array;
        } finally {
          answer.dispose();
        }
      }
      if (opts.answerDelayMs) await new Promise((resolve) => setTimeout(resolve, opts.answerDelayMs));
      // A client that hung up gets nothing, so it pays nothing.
      if (res.destroyed || req.socket.destroyed) {
        ledger.release(held);
        return;
      }
      await ledger.commit(held, id);
      const classes = target.classes;
      if (batch.binary) {
        const body = encodeF32(values as Float32Array);
        if (lifecycle.closing) res.setHeader('connection', 'close');
        res.writeHead(200, { 'content-type': BINARY_TYPE, 'content-length': body.length, [ROWS_HEADER]: String(batch.rows), [CLASSES_HEADER]: String(classes) });
        res.end(body);
      } else {
        const outputs = Array.from({ length: batch.rows }, (_, r) => Array.from(values.subarray(r * classes, (r + 1) * classes)));
        send(res, 200, leaves ? { outputs, leaves: Array.from(leaves) } : { outputs });
      }
    } finally {
      ledger.release(held); // no-op once committed
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (lifecycle.closing) throw new HttpError(503, 'the server is shutting down', {}, { connection: 'close' });
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const match = PREDICT.exec(path);
    const method = match ? 'POST' : path === '/v1/models' || path === '/v1/usage' ? 'GET' : undefined;
    if (!method) throw new HttpError(404, `no route ${path}: use GET /v1/models, POST /v1/models/{id}/predict or GET /v1/usage`);
    if (req.method !== method) throw new HttpError(405, `${path} takes ${method}, not ${req.method}`, {}, { allow: method });
    const key = authenticate(req);
    if (match) {
      let id: string;
      try {
        id = decodeURIComponent(match[1]);
      } catch {
        throw new HttpError(400, `model id in ${path} is not valid URL encoding`);
      }
      return predict(req, res, key, id);
    }
    if (path === '/v1/usage') return send(res, 200, usage(key));
    const models = [...targets.values()]
      .filter((t) => allowsModel(key, t.id))
      .map((t) => ({ id: t.id, family: t.family, inputShape: t.inputShape, classes: t.classes }));
    send(res, 200, { models });
  }

  const server = createServer((req, res) => {
    void lifecycle.track(
      handle(req, res)
        .catch((err: unknown) => {
          if (res.headersSent || res.destroyed) return;
          if (err instanceof HttpError) return send(res, err.status, { error: err.message, ...err.body }, err.headers);
          log(`server error on ${req.method} ${req.url}: ${(err as Error)?.stack ?? String(err)}`);
          send(res, 500, { error: 'internal error' });
        })
        .catch((err: unknown) => log(`could not answer ${req.method} ${req.url}: ${String(err)}`)),
    );
  });
  answerClientErrors(server);

  const host = config.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? config.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (err) => {
    for (const t of targets.values()) t.dispose();
    await ledger.close();
    throw new Error(`cannot listen on ${host}:${opts.port ?? config.port}: ${(err as Error).message}`);
  });
  const { url, port } = serverUrl(server, host);

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      await lifecycle.close(server);
      try {
        await ledger.close();
      } finally {
        for (const t of targets.values()) t.dispose();
      }
    })());
  return { url, port, close };
}
