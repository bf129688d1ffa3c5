import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { logGrid } from '../models/learners/cv.ts';
import { ridge } from '../models/learners/ridge.ts';
import type { Rows64 } from '../models/learners/types.ts';
import { rng } from '../models/seed.ts';
import { ConfigError } from '../bench/config.ts';
import { hashKey } from '../serve/keys.ts';
import { HttpTrainingApi, TrainingHttpError } from '../serve/training-client.ts';
import { buildTrainingService, gaussianRows, loadTrainingServeConfig, parseTrainingServeConfig } from '../serve/training-config.ts';
import { startTrainingServer, type RunningTrainingServer } from '../serve/training-server.ts';
import { TrainingApiError, TrainingService, type FitRequest, type FitResponse, type TrainingApi, type TrainingServiceOptions, type TrainingUsage } from '../serve/training.ts';
import { rejection } from './helpers.ts';

const KEY = 'training-test-key';
const N = 40;
const D = 5;
const rows = gaussianRows(N, D, 7);
const y = Float64Array.from({ length: N }, (_, i) => 2 * rows.x[i * D] - rows.x[i * D + 3] + 0.3 * Math.sin(i));
const GRID = logGrid(-2, 2, 5);
const FOLDS = 4;

const options = (extra: Partial<TrainingServiceOptions> = {}): TrainingServiceOptions => ({
  learner: ridge,
  data: rows,
  protocol: 'I',
  lambdas: GRID,
  folds: FOLDS,
  seed: 2,
  releases: ['fitted', 'handle', 'params'],
  ...extra,
});

const servers: RunningTrainingServer[] = [];
async function serve(api: TrainingApi, opts: Parameters<typeof startTrainingServer>[1] = {}): Promise<{ server: RunningTrainingServer; client: HttpTrainingApi }> {
  const server = await startTrainingServer(api, { port: 0, keySha256: hashKey(KEY), log: () => {}, ...opts });
  servers.push(server);
  return { server, client: await HttpTrainingApi.connect({ url: server.url, key: KEY }) };
}

/** The bytes of a float64 array as hex: equal strings mean bit-identical values. */
const bits = (a: Float64Array | undefined) => (a ? Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('hex') : 'none');

async function refusal(p: Promise<unknown>) {
  const err = await rejection(p);
  assert.ok(err instanceof TrainingApiError || err instanceof TrainingHttpError, `unexpected ${err}`);
  return err as TrainingApiError | TrainingHttpError;
}

interface Answer {
  status: number;
  headers: Headers;
  json: { error?: string } & Record<string, unknown>;
  text: string;
}
async function raw(base: string, path: string, init: { method?: string; body?: string; type?: string | null; key?: string | null } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (init.type !== null) headers['content-type'] = init.type ?? 'application/json';
  if (init.key !== null) headers.authorization = `Bearer ${init.key ?? KEY}`;
  // fetch labels a string body text/plain; bytes go unlabelled.
  const body = init.type === null && init.body !== undefined ? new TextEncoder().encode(init.body) : init.body;
  const res = await fetch(`${base}${path}`, { method: init.method ?? (init.body === undefined ? 'GET' : 'POST'), headers, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: JSON.parse(text), text };
}

test('over HTTP the same service gives bit-identical params, fitted values, handles and predictions', async () => {
  const local = new TrainingService(options({ caps: { fits: 5, rows: 100 } }));
  const { client } = await serve(new TrainingService(options({ caps: { fits: 5, rows: 100 } })));
  assert.is(client.learnerTask, 'regression');
  const fresh = gaussianRows(17, D, 8);
  for (const labels of [y, Float64Array.from(y, (v) => -v / 3)]) {
    const [a, b] = [await local.fit({ y: labels }), await client.fit({ y: labels })];
    assert.equal(Object.keys(b).sort(), ['fitted', 'handle', 'params']);
    assert.is(bits(b.params), bits(a.params), 'params');
    assert.is(bits(b.fitted), bits(a.fitted), 'fitted');
    assert.is(b.handle, a.handle);
    assert.is(bits(await client.predict(b.handle!, fresh)), bits(await local.predict(a.handle!, fresh)), 'predictions');
  }
  const [ul, uh] = [await local.usage(), await client.usage()];
  assert.equal({ ...uh, providerSeconds: 0 }, { ...ul, providerSeconds: 0 });
  assert.equal(uh.caps, { fits: 5, rows: 100 });
  assert.is(uh.providerFits, 2 * (FOLDS * GRID.length + 1));

  // Protocol II on the user's rows, with a λ that is not a short decimal.
  const opts = options({ protocol: 'II', lambdas: [], acceptsData: true, data: undefined });
  const local2 = new TrainingService(opts);
  const { client: client2 } = await serve(new TrainingService(opts));
  const lambda = Math.PI / 7;
  const [a, b] = [await local2.fit({ y, x: rows, lambda }), await client2.fit({ y, x: rows, lambda })];
  assert.is(bits(b.params), bits(a.params));
  assert.is(bits(b.params), bits(ridge.fit(rows, y, lambda).params), 'and both are ridge at the λ sent');
  const u = await client2.usage();
  assert.equal(u.caps, { fits: Infinity, rows: Infinity }, 'uncapped reads back as Infinity');
});

/** A service that answers with what it was sent, to test the wire alone. */
class Echo implements TrainingApi {
  readonly learnerTask = 'regression' as const;
  async fit(r: FitRequest): Promise<FitResponse> {
    return { params: r.y, fitted: r.x?.x, handle: 'echo' };
  }
  async predict(_handle: string, r: Rows64): Promise<Float64Array> {
    return r.x[0] === 42 ? Float64Array.of(NaN, Infinity, -Infinity, 1) : r.x;
  }
  async usage(): Promise<TrainingUsage> {
    return { fits: 0, rows: 0, caps: { fits: Infinity, rows: 3 }, providerFits: 0, providerSeconds: 0 };
  }
}

test('float64 values round-trip exactly both ways, −0 and subnormals included', async () => {
  const special = [-0, 0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308, 0.1, 0.1 + 0.2, 1 / 3, Math.PI, -1e-300, 2 ** 53 + 2, 123456789.12345678];
  const random = rng(4, 'bits');
  const words = new Uint32Array(2);
  const view = new Float64Array(words.buffer);
  const values: number[] = [...special];
  while (values.length < 3000) {
    words[0] = Math.floor(random() * 2 ** 32);
    words[1] = Math.floor(random() * 2 ** 32);
    if (Number.isFinite(view[0])) values.push(view[0]);
  }
  const sent = Float64Array.from(values);
  const { server, client } = await serve(new Echo());
  const answer = await client.fit({ y: sent, x: { x: sent, n: sent.length, d: 1 } });
  assert.is(bits(answer.params), bits(sent), 'labels there and back');
  assert.is(bits(answer.fitted), bits(sent), 'rows there and back');
  assert.ok(Object.is(answer.params![0], -0), '−0 survives');
  assert.is(bits(await client.predict('echo', { x: sent, n: sent.length, d: 1 })), bits(sent));

  const text = (await raw(server.url, '/v1/predict', { body: JSON.stringify({ handle: 'echo', rows: { n: 1, d: 2, x: [0.5, 7] } }).replace('0.5', '-0') })).text;
  assert.is(text, '{"predictions":[-0,7]}', '−0 is written as -0, not 0');
  // Non-finite answers have no JSON number: null on the wire, NaN at the client.
  const odd = await client.predict('echo', { x: Float64Array.of(42), n: 1, d: 1 });
  assert.equal(Array.from(odd), [NaN, NaN, NaN, 1]);
  assert.equal((await raw(server.url, '/v1/usage')).json.caps, { fits: null, rows: 3 }, 'an uncapped cap is null in JSON');
});

test('service refusals come back as TrainingApiError with the in-process status and message', async () => {
  const local = new TrainingService(options({ caps: { fits: 1, rows: 5 } }));
  const { client } = await serve(new TrainingService(options({ caps: { fits: 1, rows: 5 } })));
  const same = async (label: string, call: (api: TrainingApi) => Promise<unknown>, status: number) => {
    const [l, h] = [await refusal(call(local)), await refusal(call(client))];
    assert.instance(h, TrainingApiError, label);
    assert.is(h.status, status, label);
    assert.is(h.status, l.status, label);
    assert.is(h.message, l.message, label);
  };
  await same('λ under Protocol I', (api) => api.fit({ y, lambda: 1 }), 400);
  await same('labels of the wrong length', (api) => api.fit({ y: y.subarray(1) }), 400);
  await same('rows where the service has its own', (api) => api.fit({ y, x: rows }), 400);
  const { handle } = await local.fit({ y });
  assert.is((await client.fit({ y })).handle, handle);
  await same('k₁ reached', (api) => api.fit({ y }), 429);
  await same('unknown handle', (api) => api.predict('m7', rows), 404);
  await same('rows of the wrong width', (api) => api.predict(handle!, gaussianRows(2, D + 2, 1)), 400);
  await same('k₂ passed', (api) => api.predict(handle!, gaussianRows(6, D, 1)), 429);
  for (const api of [local, client]) assert.is((await api.predict(handle!, gaussianRows(5, D, 1))).length, 5, 'a request within k₂ still answers');
  await same('k₂ used up', (api) => api.predict(handle!, gaussianRows(1, D, 1)), 429);
  const u = await client.usage();
  assert.equal({ fits: u.fits, rows: u.rows }, { fits: 1, rows: 5 });
});

test('bad requests: 400 naming the field, 401, 404, 405, 413, 415; none counted, server still answers', async () => {
  const { server, client } = await serve(new TrainingService(options({ protocol: 'II', lambdas: [] })), { maxBodyBytes: 4096 });
  const fit = (body: string, extra: { type?: string | null; key?: string | null } = {}) => raw(server.url, '/v1/fit', { body, ...extra });
  const cases: [string, Promise<Answer>, number, RegExp][] = [
    ['malformed JSON', fit('{"y": [1, 2'), 400, /^malformed JSON/],
    ['not an object', fit('[1, 2]'), 400, /the body must be a JSON object/],
    ['labels not an array', fit('{"y": "1,2", "lambda": 1}'), 400, /^y: Invalid input: expected array, received string/],
    ['a label not a number', fit('{"y": [1, "2"], "lambda": 1}'), 400, /^y\[1\]: expected a finite number, got "2"/],
    ['a label null', fit('{"y": [1, 2, null], "lambda": 1}'), 400, /^y\[2\]: expected a finite number, got null/],
    ['Infinity', fit('{"y": [1, 2, 1e999], "lambda": 1}'), 400, /^y\[2\]: expected a finite number, got Infinity/],
    ['λ infinite', fit('{"y": [1], "lambda": -1e400}'), 400, /^lambda: expected a finite number, got -Infinity/],
    ['λ a string', fit('{"y": [1], "lambda": "0.1"}'), 400, /^lambda: expected a finite number, got "0.1"/],
    ['misspelt field', fit('{"y": [1], "lamda": 1}'), 400, /Unrecognized key: "lamda"/],
    ['rows n not an integer', fit('{"y": [1], "x": {"n": 1.5, "d": 1, "x": [1]}}'), 400, /^x\.n: /],
    ['rows of the wrong size', fit('{"y": [1, 2], "x": {"n": 2, "d": 2, "x": [1, 2, 3]}}'), 400, /^x\.x: has 3 values, expected n·d = 4/],
    ['a row value not finite', fit('{"y": [1], "x": {"n": 1, "d": 2, "x": [1, 1e999]}}'), 400, /^x\.x\[1\]: expected a finite number, got Infinity/],
    ['predict without a handle', raw(server.url, '/v1/predict', { body: '{"rows": {"n": 1, "d": 1, "x": [0]}}' }), 400, /^handle: /],
    ['the service\'s own check', fit(`{"y": [1, 2], "lambda": 1}`), 400, /^labels: expected 40 values, got 2/],
    ['no key', fit('{"y": []}', { key: null }), 401, /missing API key/],
    ['wrong key', fit('{"y": []}', { key: 'guess' }), 401, /unknown API key/],
    ['unknown route', raw(server.url, '/v1/train', { body: '{}' }), 404, /no route \/v1\/train: use POST \/v1\/fit, POST \/v1\/predict, GET \/v1\/usage, GET \/v1\/health/],
    ['GET a POST route', raw(server.url, '/v1/fit'), 405, /\/v1\/fit takes POST, not GET/],
    ['POST a GET route', raw(server.url, '/v1/usage', { body: '{}' }), 405, /\/v1\/usage takes GET, not POST/],
    ['body over the limit', fit(`{"y": [${'1,'.repeat(3000)}1], "lambda": 1}`), 413, /request body of \d+ bytes is over the limit of 4096 bytes/],
    ['text/plain', fit('{"y": [1]}', { type: 'text/plain' }), 415, /content type "text\/plain" is not accepted: send application\/json/],
    ['no content type', fit('{"y": [1]}', { type: null }), 415, /content type null is not accepted/],
  ];
  for (const [name, pending, status, message] of cases) {
    const r = await pending;
    assert.is(r.status, status, name);
    assert.type(r.json.error, 'string', name);
    assert.match(r.json.error!, message, `${name}: ${r.json.error}`);
  }
  assert.is((await raw(server.url, '/v1/fit')).headers.get('allow'), 'POST');

  // A body without a declared length is cut off as it streams in.
  const chunk = new TextEncoder().encode(`${'1,'.repeat(1000)}`);
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent === 0) controller.enqueue(new TextEncoder().encode('{"lambda": 1, "y": ['));
      if (sent++ < 4) controller.enqueue(chunk);
      else {
        controller.enqueue(new TextEncoder().encode('1]}'));
        controller.close();
      }
    },
  });
  const streamed = await fetch(`${server.url}/v1/fit`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: stream,
    duplex: 'half',
  } as RequestInit);
  assert.is(streamed.status, 413);
  assert.equal(await streamed.json(), { error: 'request body is over the limit of 4096 bytes' });

  // Through the client, the transport's refusals are TrainingHttpError with their status.
  const big = await refusal(client.fit({ y: new Float64Array(2000).fill(0.123456789), lambda: 1 }));
  assert.instance(big, TrainingHttpError);
  assert.is(big.status, 413);
  const keyless = await refusal(new HttpTrainingApi({ url: server.url, learnerTask: 'regression' }).usage());
  assert.instance(keyless, TrainingHttpError);
  assert.is(keyless.status, 401);

  assert.is((await client.usage()).fits, 0, 'no bad request was counted');
  assert.is((await client.fit({ y, lambda: 1 })).params!.length, D + 1, 'and the server still fits');
  assert.equal((await raw(server.url, '/v1/health', { key: null })).json, { status: 'ok', task: 'regression' }, 'health needs no key');
});

test('close: a request in flight finishes, keep-alive clients do not hold it open, then nothing answers', async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  class Slow extends Echo {
    override async fit(r: FitRequest): Promise<FitResponse> {
      await gate;
      return super.fit(r);
    }
  }
  const { server, client } = await serve(new Slow());
  await client.usage(); // leaves a keep-alive connection in the client's pool
  const pending = client.fit({ y: Float64Array.of(1.25) });
  await new Promise((resolve) => setTimeout(resolve, 30));
  let closed = false;
  const closing = server.close().then(() => (closed = true));
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.is(closed, false, 'close waits for the fit in flight');
  release();
  assert.equal(Array.from((await pending).params!), [1.25], 'which is answered');
  await closing;
  assert.ok(closed);
  await server.close(); // a second close is a no-op
  const after = await rejection(fetch(`${server.url}/v1/health`));
  assert.instance(after, TypeError, 'nothing listens any more');
});

test('serve/training-example.json: loads, builds and serves; bad configs are refused naming the field', async () => {
  const cfg = await loadTrainingServeConfig('serve/training-example.json');
  const built = buildTrainingService(cfg);
  const server = await startTrainingServer(built.service, { ...built.server, port: 0, log: () => {} });
  servers.push(server);
  const client = await HttpTrainingApi.connect({ url: server.url, key: 'rhobench-local-test-key' });
  const labels = Float64Array.from({ length: cfg.data!.n }, (_, i) => (i % 7) - 3);
  const answer = await client.fit({ y: labels });
  assert.equal(Object.keys(answer).sort(), ['handle', 'params']);
  assert.is(answer.params!.length, cfg.data!.d + 1);
  const u = await client.usage();
  assert.equal(u.caps, { fits: 20, rows: 10000 });
  assert.is(u.providerFits, 5 * 13 + 1);

  const base = { learner: 'ridge', protocol: 'I', lambdas: [0.1, 1], releases: ['params'], data: { kind: 'gaussian', n: 20, d: 2 } };
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...base, learner: 'no-such-learner' }, /learner: unknown learner; known: .*ridge/],
    [{ ...base, lambdas: [] }, /lambdas: Protocol I needs a λ grid/],
    [{ ...base, protocol: 'II' }, /lambdas: Protocol II takes λ from the user/],
    [{ ...base, data: undefined }, /data: give the provider data, or set acceptsData: true/],
    [{ ...base, releases: ['weights'] }, /releases\.0: /],
    [{ ...base, caps: { fits: -1 } }, /caps\.fits: /],
    [{ ...base, data: { kind: 'gaussian', n: 3, d: 2 } }, /data\.n: 5-fold cross-validation needs at least 5 rows/],
  ];
  for (const [value, message] of bad) {
    const err = (() => {
      try {
        parseTrainingServeConfig(value, 'test config');
      } catch (e) {
        return e as Error;
      }
      throw new Error(`accepted ${JSON.stringify(value)}`);
    })();
    assert.instance(err, ConfigError);
    assert.match(err.message, message);
  }
  const ok = parseTrainingServeConfig({ ...base, lambdas: { logGrid: { lo: -1, hi: 1, count: 3 } } });
  assert.equal(buildTrainingService(ok).service.learnerTask, 'regression');
});

test.after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

test.run();
