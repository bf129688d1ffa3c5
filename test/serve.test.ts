import { request as httpRequest } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, appendFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { getAttack } from '../attacks/index.ts';
import type { AttackContext } from '../attacks/types.ts';
import { scoreImitation } from '../bench/score.ts';
import { loadPool } from '../datasets/index.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { getTarget } from '../models/targets/index.ts';
import type { Target } from '../models/types.ts';
import { parseServeConfig, type ServeConfig } from '../serve/config.ts';
import { HttpOracle } from '../serve/http-oracle.ts';
import { bearerToken, hashKey, KeyRing } from '../serve/keys.ts';
import { Ledger, parseLedger } from '../serve/ledger.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import { TokenBucket } from '../serve/rate-limit.ts';
import { startServer, type RunningServer } from '../serve/server.ts';
import { BudgetExceeded, type Disclosure } from '../serve/types.ts';
import { decodeF32, encodeF32 } from '../serve/wire.ts';
import { smallMnist, TEST_CACHE } from './helpers.ts';

const NB = { id: 'nb', family: 'naive-bayes', trainSize: 2000, varSmoothing: 0.1, seed: 1 } as const;
const shape: [number, number, number] = [28, 28, 1];
const WIDTH = 784;
const HAMMER_BUDGET = 200;

/** Plain-text keys; the config only ever sees their hashes. */
const SECRET = {
  probs: 'probs-secret-0123',
  label: 'label-secret-4567',
  limited: 'limited-secret',
  small: 'small-budget-secret',
  slow: 'slow-secret',
  slowOracle: 'slow-oracle-secret',
  hammer: 'hammer-secret',
  knockoff: 'knockoff-secret',
};

const fast = { requestsPerSecond: 1000, burst: 1000 };

function rawConfig(ledger: string) {
  const key = (name: keyof typeof SECRET, disclosure: string, budget: number, extra: Record<string, unknown> = {}) => ({
    name,
    sha256: hashKey(SECRET[name]),
    disclosure,
    budget,
    rateLimit: fast,
    models: '*' as string | string[],
    ...extra,
  });
  return {
    port: 0,
    dataset: { name: 'mnist', trainSize: 2000, poolSize: 2000, evalSize: 1000, seed: 3 },
    targets: [NB, { id: 'nb-wide', family: 'naive-bayes', trainSize: 1000, varSmoothing: 0.3, seed: 1 }],
    keys: [
      key('probs', 'probs', 10_000),
      key('label', 'label', 10_000),
      key('limited', 'probs', 100, { models: ['nb-wide'] }),
      key('small', 'probs', 5),
      key('slow', 'probs', 100, { rateLimit: { requestsPerSecond: 1, burst: 2 } }),
      key('slowOracle', 'probs', 100, { rateLimit: { requestsPerSecond: 2, burst: 2 } }),
      key('hammer', 'top3', HAMMER_BUDGET),
      key('knockoff', 'label', 300),
    ],
    ledger,
    maxRowsPerRequest: 512,
    maxBodyBytes: 512 * WIDTH * 4,
  };
}

let ds: Dataset;
let target: Target;
let pool: Split;
let dir: string;
let server: RunningServer;
const logs: string[] = [];

const config = (ledger: string): ServeConfig => parseServeConfig(rawConfig(ledger), 'test config');
/** Every server a test starts; closed after the suite too, so a failed assertion cannot leave one listening. */
const started: RunningServer[] = [];
async function start(ledger: string, answerDelayMs = 0): Promise<RunningServer> {
  const s = await startServer(config(ledger), { cacheDir: TEST_CACHE, log: (m) => logs.push(m), answerDelayMs });
  started.push(s);
  return s;
}

test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
  target = await getTarget({ ...NB }, ds, { cacheDir: TEST_CACHE });
  pool = await loadPool('same', ds, 2000, 1);
  dir = mkdtempSync(join(tmpdir(), 'rhobench-serve-'));
  server = await start(join(dir, 'main.jsonl'));
});
test.after(async () => {
  await Promise.all(started.map((s) => s.close()));
  target?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Rows [s, e) of the pool, flat. */
const rows = (s: number, e: number) => pool.x.slice(s * WIDTH, e * WIDTH);
const asJsonRows = (flat: Float32Array) => Array.from({ length: flat.length / WIDTH }, (_, r) => Array.from(flat.subarray(r * WIDTH, (r + 1) * WIDTH)));

interface Answer {
  status: number;
  headers: Headers;
  json?: any;
  bytes?: Uint8Array;
}

async function call(path: string, opts: { key?: string; method?: string; body?: BodyInit; headers?: Record<string, string>; base?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key !== undefined) headers.authorization = `Bearer ${opts.key}`;
  const res = await fetch(`${opts.base ?? server.url}${path}`, { method: opts.method ?? (opts.body === undefined ? 'GET' : 'POST'), headers, body: opts.body });
  const type = res.headers.get('content-type') ?? '';
  if (type.startsWith('application/json')) return { status: res.status, headers: res.headers, json: await res.json() };
  return { status: res.status, headers: res.headers, bytes: new Uint8Array(await res.arrayBuffer()) };
}

const predictJson = (key: string, inputs: unknown, model = 'nb', base?: string) =>
  call(`/v1/models/${model}/predict`, { key, base, body: JSON.stringify({ inputs }), headers: { 'content-type': 'application/json' } });
const predictBinary = (key: string, flat: Float32Array, n = flat.length / WIDTH, model = 'nb', base?: string) =>
  call(`/v1/models/${model}/predict`, { key, base, body: encodeF32(flat), headers: { 'content-type': 'application/octet-stream', 'x-rows': String(n) } });

/** What the in-process oracle answers for the same rows. */
async function inProcess(flat: Float32Array, d: Disclosure): Promise<Float32Array> {
  const oracle = new InProcessOracle(target, 1e9, d);
  const x = tf.tensor4d(flat, [flat.length / WIDTH, ...shape]);
  const y = await oracle.query(x);
  const values = (await y.data()) as Float32Array;
  tf.dispose([x, y]);
  return values;
}

async function usage(key: string, base?: string) {
  const u = await call('/v1/usage', { key, base });
  assert.is(u.status, 200);
  return u.json as { key: string; budget: number; spent: number; inFlight: number; remaining: number; disclosure: string };
}

const ledgerSum = (path: string, key: string) => parseLedger(readFileSync(path, 'utf8'), path).spent.get(key) ?? 0;

test('config: hashes only, disclosures parsed, unknown models and bad hashes named', () => {
  const cfg = config(join('x', 'l.jsonl'));
  assert.equal(cfg.keys[0].disclosure, { kind: 'probs' });
  assert.equal(cfg.keys.find((k) => k.name === 'hammer')!.disclosure, { kind: 'topk', k: 3 });
  assert.is(cfg.targets[1].id, 'nb-wide');
  const bad = rawConfig('l.jsonl');
  bad.keys[0] = { ...bad.keys[0], disclosure: 'top' } as (typeof bad.keys)[0];
  bad.keys[1] = { ...bad.keys[1], sha256: 'abc' } as (typeof bad.keys)[1];
  assert.throws(() => parseServeConfig(bad, 'bad.json'), (err: Error) =>
    /bad\.json is not a valid serve config/.test(err.message) &&
    /keys\.0\.disclosure: unknown disclosure "top"/.test(err.message) &&
    /keys\.1\.sha256: must be the sha256/.test(err.message));
  const unknownModel = rawConfig('l.jsonl');
  unknownModel.keys[2] = { ...unknownModel.keys[2], models: ['nope'] };
  assert.throws(() => parseServeConfig(unknownModel, 'bad.json'), /keys\.2\.models: unknown model "nope": the targets are nb, nb-wide/);
  const twice = rawConfig('l.jsonl');
  twice.keys[1] = { ...twice.keys[1], sha256: twice.keys[0].sha256 };
  assert.throws(() => parseServeConfig(twice, 'bad.json'), /keys: duplicate key hash/);
});

test('keys: only the right token matches; bearer parsing; token bucket refills at its rate', () => {
  const ring = new KeyRing(config('l.jsonl').keys);
  assert.is(ring.lookup(SECRET.label)?.name, 'label');
  assert.is(ring.lookup(SECRET.probs)?.name, 'probs');
  assert.is(ring.lookup(`${SECRET.label}x`), undefined);
  assert.is(ring.lookup(hashKey(SECRET.label)), undefined, 'the hash itself is not a key');
  assert.is(ring.lookup(undefined), undefined);
  assert.is(bearerToken('Bearer abc'), 'abc');
  assert.is(bearerToken('bearer  abc '), 'abc');
  assert.is(bearerToken('Basic abc'), undefined);
  assert.is(bearerToken('Bearer a b'), undefined);
  let now = 0;
  const bucket = new TokenBucket(2, 3, () => now);
  assert.equal([bucket.take().ok, bucket.take().ok, bucket.take().ok], [true, true, true]);
  const refused = bucket.take();
  assert.ok(!refused.ok && Math.abs(refused.retryAfterS - 0.5) < 1e-9, JSON.stringify(refused));
  now = 500;
  assert.ok(bucket.take().ok, 'one token after half a second at 2/s');
  assert.not.ok(bucket.take().ok);
});

test('ledger: a torn last line is ignored, reported and cut off; a bad line elsewhere is an error', async () => {
  const path = join(dir, 'torn.jsonl');
  const line = (key: string, rows: number) => `${JSON.stringify({ t: new Date(0).toISOString(), key, model: 'nb', rows })}\n`;
  writeFileSync(path, line('a', 3) + line('b', 4) + line('a', 5) + '{"t":"2024-01-01T00:00:00.000Z","key":"a","mo');
  const warnings: string[] = [];
  const ledger = await Ledger.open(path, (m) => warnings.push(m));
  assert.is(ledger.spent('a'), 8);
  assert.is(ledger.spent('b'), 4);
  assert.is(warnings.length, 1);
  assert.match(warnings[0], /torn\.jsonl: ignored a torn last line/);
  const held = ledger.reserve('a', 2, 10)!;
  assert.ok(held);
  assert.is(ledger.reserve('a', 1, 10), undefined, '8 spent + 2 held leaves nothing');
  ledger.release(held);
  await ledger.commit(ledger.reserve('a', 2, 10)!, 'nb');
  await ledger.close();
  assert.is(ledgerSum(path, 'a'), 10, 'the append starts on a clean line');
  writeFileSync(path, line('a', 1) + 'garbage\n' + line('a', 1));
  await Ledger.open(path).then(
    () => assert.unreachable('a corrupt middle line must not be skipped'),
    (err: Error) => assert.match(err.message, /torn\.jsonl: line 2 is not a ledger entry: garbage/),
  );
});

test('401 without or with a wrong key; models list shapes, never weights; 404 and 405 for other routes', async () => {
  for (const key of [undefined, 'not-a-key']) {
    const r = await call('/v1/models', { key });
    assert.is(r.status, 401);
    assert.match(r.json.error, key ? /unknown API key/ : /missing API key/);
    assert.is(r.headers.get('www-authenticate'), 'Bearer');
  }
  const r = await call('/v1/models', { headers: { authorization: 'Basic x' } });
  assert.is(r.status, 401);
  const models = await call('/v1/models', { key: SECRET.probs });
  assert.is(models.status, 200);
  assert.equal(models.json, {
    models: [
      { id: 'nb', family: 'naive-bayes', inputShape: [28, 28, 1], classes: 10 },
      { id: 'nb-wide', family: 'naive-bayes', inputShape: [28, 28, 1], classes: 10 },
    ],
  });
  assert.equal((await call('/v1/models', { key: SECRET.limited })).json.models.map((m: { id: string }) => m.id), ['nb-wide']);
  assert.is((await call('/v1/nope', { key: SECRET.probs })).status, 404);
  const wrongMethod = await call('/v1/usage', { key: SECRET.probs, method: 'DELETE' });
  assert.is(wrongMethod.status, 405);
  assert.match(wrongMethod.json.error, /takes GET, not DELETE/);
});

test('403 for a model the key may not use, 404 for an unknown model; neither spends', async () => {
  const forbidden = await predictJson(SECRET.limited, asJsonRows(rows(0, 1)), 'nb');
  assert.is(forbidden.status, 403);
  assert.match(forbidden.json.error, /key "limited" may not use model "nb"/);
  const allowed = await predictJson(SECRET.limited, asJsonRows(rows(0, 1)), 'nb-wide');
  assert.is(allowed.status, 200);
  const unknown = await predictJson(SECRET.probs, asJsonRows(rows(0, 1)), 'resnet');
  assert.is(unknown.status, 404);
  assert.match(unknown.json.error, /unknown model "resnet"/);
  assert.is((await usage(SECRET.limited)).spent, 1);
  assert.is((await usage(SECRET.probs)).spent, 0);
});

test('bad input: 400/413/415 with an error naming the problem, no budget spent, server still up', async () => {
  const one = rows(0, 1);
  const nan = rows(0, 2);
  nan[WIDTH + 5] = NaN;
  const inf = rows(0, 1);
  inf[7] = -Infinity;
  const json = (body: string) => call('/v1/models/nb/predict', { key: SECRET.probs, body, headers: { 'content-type': 'application/json' } });
  const binary = (body: Uint8Array<ArrayBuffer>, headers: Record<string, string>) =>
    call('/v1/models/nb/predict', { key: SECRET.probs, body, headers: { 'content-type': 'application/octet-stream', ...headers } });
  const row = Array.from(one);
  const cases: [string, Promise<Answer>, number, RegExp][] = [
    ['malformed JSON', json('{"inputs": [[0, 1'), 400, /malformed JSON/],
    ['not an object', json('[1, 2]'), 400, /must be a JSON object \{"inputs"/],
    ['empty batch', predictJson(SECRET.probs, []), 400, /empty batch/],
    ['wrong row length', predictJson(SECRET.probs, [row, row.slice(1)]), 400, /inputs\[1\] has 783 values; this model takes rows of 784/],
    ['row not an array', predictJson(SECRET.probs, [row, 5]), 400, /inputs\[1\] is not an array/],
    ['non-number', predictJson(SECRET.probs, [[...row.slice(0, 3), '0.5', ...row.slice(4)]]), 400, /inputs\[0\]\[3\] is not a number: "0\.5"/],
    ['null', predictJson(SECRET.probs, [[...row.slice(0, 9), null, ...row.slice(10)]]), 400, /inputs\[0\]\[9\] is not a number: null/],
    ['Infinity in JSON', json(`{"inputs": [[${row.slice(0, 783).join(',')},1e999]]}`), 400, /inputs\[0\]\[783\] is not a finite float32: Infinity/],
    ['float32 overflow', json(`{"inputs": [[1e300,${row.slice(1).join(',')}]]}`), 400, /inputs\[0\]\[0\] is not a finite float32/],
    ['NaN in binary', binary(encodeF32(nan), { 'x-rows': '2' }), 400, /row 1, value 5 is NaN/],
    ['-Infinity in binary', binary(encodeF32(inf), { 'x-rows': '1' }), 400, /row 0, value 7 is -Infinity/],
    ['binary rows mismatch', binary(encodeF32(one), { 'x-rows': '2' }), 400, /body has 3136 bytes; x-rows: 2 rows .* need 6272/],
    ['binary without x-rows', binary(encodeF32(one), {}), 400, /needs a x-rows header/],
    ['binary zero rows', binary(new Uint8Array(0), { 'x-rows': '0' }), 400, /empty batch: x-rows is 0/],
    ['too many rows (JSON)', predictJson(SECRET.probs, Array.from({ length: 513 }, () => [0])), 413, /513 rows is more than the 512 allowed/],
    ['too many rows (binary)', binary(new Uint8Array(4), { 'x-rows': '600' }), 413, /600 rows is more than the 512/],
    ['body over the limit', json(`{"inputs": [${'0,'.repeat(512 * WIDTH * 2)}0]}`), 413, /over the limit of 1605632 bytes/],
    ['wrong content type', call('/v1/models/nb/predict', { key: SECRET.probs, body: 'x', headers: { 'content-type': 'text/plain' } }), 415, /content type "text\/plain" is not accepted/],
    ['no content type', call('/v1/models/nb/predict', { key: SECRET.probs, body: new Uint8Array(8) }), 415, /is not accepted: send application\/json or application\/octet-stream/],
  ];
  for (const [name, pending, status, message] of cases) {
    const r = await pending;
    assert.is(r.status, status, name);
    assert.type(r.json?.error, 'string', name);
    assert.match(r.json.error, message, name);
  }
  const u = await usage(SECRET.probs);
  assert.is(u.spent, 0, 'bad input never spends');
  assert.is(u.remaining, 10_000);
  assert.is((await predictBinary(SECRET.probs, one)).status, 200, 'and the server still answers');
  assert.is((await usage(SECRET.probs)).spent, 1);
});

test('402 over budget: remaining given, nothing answered, a query that fits still works', async () => {
  assert.is((await predictBinary(SECRET.small, rows(0, 3))).status, 200);
  const refused = await predictJson(SECRET.small, asJsonRows(rows(3, 6)));
  assert.is(refused.status, 402);
  assert.is(refused.json.remaining, 2);
  assert.match(refused.json.error, /query of 3 rows refused: only 2/);
  assert.is(refused.json.outputs, undefined);
  assert.is((await predictJson(SECRET.small, asJsonRows(rows(3, 5)))).status, 200);
  const spentOut = await predictBinary(SECRET.small, rows(0, 1));
  assert.is(spentOut.status, 402);
  assert.is(spentOut.json.remaining, 0);
  assert.equal(await usage(SECRET.small), { key: 'small', budget: 5, spent: 5, inFlight: 0, remaining: 0, disclosure: 'probs' });
});

test('429 over the rate limit, with Retry-After', async () => {
  const statuses: number[] = [];
  let retryAfter: string | null = null;
  for (let i = 0; i < 3; i++) {
    const r = await call('/v1/usage', { key: SECRET.slow });
    statuses.push(r.status);
    if (r.status === 429) {
      retryAfter = r.headers.get('retry-after');
      assert.match(r.json.error, /rate limit of 1 requests\/s \(burst 2\) exceeded for key "slow"/);
    }
  }
  assert.equal(statuses, [200, 200, 429]);
  assert.ok(Number(retryAfter) >= 1, `Retry-After ${retryAfter}`);
});

test('JSON and binary answers equal the in-process oracle\'s for the same rows', async () => {
  const flat = rows(100, 140);
  for (const [key, d] of [[SECRET.probs, { kind: 'probs' }], [SECRET.label, { kind: 'label' }]] as [string, Disclosure][]) {
    const want = await inProcess(flat, d);
    const bin = await predictBinary(key, flat);
    assert.is(bin.status, 200);
    assert.is(bin.headers.get('x-rows'), '40');
    assert.is(bin.headers.get('x-classes'), '10');
    assert.equal(Array.from(decodeF32(bin.bytes!)), Array.from(want), `binary ${d.kind}`);
    const js = await predictJson(key, asJsonRows(flat));
    assert.is(js.json.outputs.length, 40);
    assert.equal(js.json.outputs.flat().map(Math.fround), Array.from(want), `JSON ${d.kind}`);
  }
  const labels = decodeF32((await predictBinary(SECRET.label, flat)).bytes!);
  assert.ok(labels.every((v) => v === 0 || v === 1), 'label disclosure gives one-hots');
});

test('≥ 32 concurrent clients on one key: served rows equal the budget exactly, the rest 402', async () => {
  // Answers held 5 ms, so dozens of requests sit between their budget check and their answer at once.
  const path = join(dir, 'hammer.jsonl');
  const slow = await start(path, 5);
  const clients = 40;
  let served = 0;
  let refusals = 0;
  const client = async (c: number) => {
    let size = 1 + (c % 5);
    for (let i = 0; i < 60; i++) {
      const start = (c * 7 + i) % 1900;
      const flat = rows(start, start + size);
      const r = (c + i) % 2 ? await predictBinary(SECRET.hammer, flat, size, 'nb', slow.url) : await predictJson(SECRET.hammer, asJsonRows(flat), 'nb', slow.url);
      if (r.status === 200) {
        served += size;
        const got = r.bytes ? decodeF32(r.bytes).length / 10 : r.json.outputs.length;
        assert.is(got, size);
        continue;
      }
      assert.is(r.status, 402, JSON.stringify(r.json));
      refusals++;
      if (r.json.remaining === 0) return;
      size = Math.min(size, r.json.remaining);
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, c) => client(c)));
  assert.is(served, HAMMER_BUDGET, 'served rows = budget');
  assert.ok(refusals >= clients, `every client ends on a 402 (${refusals})`);
  const u = await usage(SECRET.hammer, slow.url);
  assert.is(u.spent, HAMMER_BUDGET);
  assert.is(u.remaining, 0);
  assert.is(u.inFlight, 0);
  assert.is(u.disclosure, 'top3');
  await slow.close();
  assert.is(ledgerSum(path, 'hammer'), HAMMER_BUDGET, 'the ledger agrees');
});

test('graceful close finishes a request in flight; the ledger survives a restart', async () => {
  const path = join(dir, 'restart.jsonl');
  const first = await start(path);
  assert.is((await predictBinary(SECRET.probs, rows(0, 4), 4, 'nb', first.url)).status, 200);
  // A request whose body is still arriving when close() is called must still be answered and recorded.
  const body = encodeF32(rows(10, 13));
  const late = new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = httpRequest(`${first.url}/v1/models/nb/predict`, {
      method: 'POST',
      headers: { authorization: `Bearer ${SECRET.probs}`, 'content-type': 'application/octet-stream', 'x-rows': '3', 'content-length': body.length },
    }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.length));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
    req.write(body.subarray(0, 1000));
    setTimeout(() => {
      const closing = first.close();
      setTimeout(() => req.end(body.subarray(1000)), 50);
      closing.catch(reject);
    }, 100);
  });
  const answer = await late;
  assert.is(answer.status, 200, 'the request in flight is answered');
  assert.is(answer.text, String(3 * 10 * 4), 'all of its bytes');
  await first.close();
  assert.is(ledgerSum(path, 'probs'), 7, 'flushed on close');
  await fetch(`${first.url}/v1/usage`).then(
    () => assert.unreachable('a closed server accepts nothing'),
    (err: Error) => assert.instance(err, TypeError),
  );

  appendFileSync(path, '{"t":"2024-01-01T00:00:00.000Z","key":"probs","model":"nb","ro');
  logs.length = 0;
  const second = await start(path);
  try {
    assert.ok(logs.some((m) => /restart\.jsonl: ignored a torn last line/.test(m)), logs.join('\n'));
    assert.is((await usage(SECRET.probs, second.url)).spent, 7, 'spent restored');
    assert.is((await predictJson(SECRET.probs, asJsonRows(rows(0, 2)), 'nb', second.url)).status, 200);
    assert.is((await usage(SECRET.probs, second.url)).spent, 9);
  } finally {
    await second.close();
  }
  assert.is(ledgerSum(path, 'probs'), 9);
  assert.not.ok(logs.some((m) => m.includes(SECRET.probs)), 'keys are never logged');
});

test('HttpOracle answers as InProcessOracle does, counts exactly, and maps 402 to BudgetExceeded', async () => {
  const base = { url: server.url, model: 'nb', classes: 10, inputShape: shape };
  const oracle = new HttpOracle({ ...base, key: SECRET.probs, budget: 500, disclosure: { kind: 'probs' }, batchSize: 64, concurrency: 3 });
  const x = tf.tensor4d(rows(200, 500), [300, ...shape]);
  const before = (await usage(SECRET.probs)).spent;
  const y = await oracle.query(x);
  assert.equal(y.shape, [300, 10]);
  assert.equal(Array.from(await y.data()), Array.from(await inProcess(rows(200, 500), { kind: 'probs' })));
  assert.is(oracle.spent, 300);
  assert.is(oracle.requests, 5, '300 rows in batches of 64');
  assert.is((await usage(SECRET.probs)).spent, before + 300);
  tf.dispose([x, y]);

  // The local budget is checked before anything is sent.
  const local = new HttpOracle({ ...base, key: SECRET.probs, budget: 10, disclosure: { kind: 'probs' } });
  const eleven = tf.tensor4d(rows(0, 11), [11, ...shape]);
  await local.query(eleven).then(
    () => assert.unreachable('over the local budget'),
    (err: BudgetExceeded) => assert.ok(err instanceof BudgetExceeded && err.asked === 11 && err.remaining === 10),
  );
  assert.is((await usage(SECRET.probs)).spent, before + 300, 'nothing sent');
  // The server's budget (the key's) is the one that binds: a 402 becomes BudgetExceeded, without retries.
  const key = new HttpOracle({ ...base, key: SECRET.knockoff, budget: 1000, disclosure: { kind: 'label' }, batchSize: 4 });
  const spentBefore = (await usage(SECRET.knockoff)).spent;
  assert.is(spentBefore, 0);
  const big = tf.tensor4d(rows(0, 301), [301, ...shape]);
  await key.query(big).then(
    () => assert.unreachable('over the key budget'),
    // Batches race, so which one is refused varies; it is refused for lack of room, not of a retry.
    (err: BudgetExceeded) => assert.ok(err instanceof BudgetExceeded && err.asked === 301 && err.remaining < 4, String(err)),
  );
  assert.is(key.retries, 0);
  assert.is(key.spent, (await usage(SECRET.knockoff)).spent, 'spent is what the server charged');
  assert.ok(key.spent > 296 && key.spent <= 300, `spent ${key.spent}`);
  tf.dispose([eleven, big]);
});

test('HttpOracle waits out 429 (Retry-After) and then gets every answer', async () => {
  const oracle = new HttpOracle({ url: server.url, model: 'nb', classes: 10, inputShape: shape, key: SECRET.slowOracle, budget: 100, disclosure: { kind: 'probs' }, batchSize: 1, concurrency: 3 });
  const x = tf.tensor4d(rows(0, 3), [3, ...shape]);
  const y = await oracle.query(x);
  assert.ok(oracle.retries >= 1, `retries ${oracle.retries}`);
  assert.is(oracle.spent, 3);
  assert.equal(Array.from(await y.data()), Array.from(await inProcess(rows(0, 3), { kind: 'probs' })));
  tf.dispose([x, y]);
});

test('a knockoff cell over HTTP gives the in-process ρ for the same seed', async () => {
  const d: Disclosure = { kind: 'label' };
  const ctx = (oracle: AttackContext['oracle']): AttackContext => ({
    oracle,
    pool,
    inputShape: shape,
    classes: 10,
    side: { name: 's', pool: 'same', disclosure: d, architecture: 'unknown' },
    student: { arch: 'mlp', epochs: 4, batchSize: 32, lr: 0.003 },
    seed: 4,
  });
  const rho = async (c: AttackContext) => {
    const imitation = await getAttack('knockoff').run(c);
    try {
      return (await scoreImitation(imitation, target, ds.split('eval'), shape)).rho;
    } finally {
      imitation.dispose();
    }
  };
  // A fresh server and ledger: the key's 300 rows are untouched.
  const fresh = await start(join(dir, 'knockoff.jsonl'));
  try {
    const http = new HttpOracle({ url: fresh.url, model: 'nb', key: SECRET.knockoff, budget: 300, disclosure: d, classes: 10, inputShape: shape });
    const overHttp = await rho(ctx(http));
    assert.is(http.spent, 300);
    assert.is((await usage(SECRET.knockoff, fresh.url)).spent, 300);
    const local = await rho(ctx(new InProcessOracle(target, 300, d)));
    assert.is(overHttp, local);
    assert.ok(local < 0.6, `ρ ${local}: the student learned something`);
  } finally {
    await fresh.close();
  }
});

test.run();
