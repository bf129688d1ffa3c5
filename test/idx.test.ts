import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DatasetError, encodeIdx, parseIdx, readIdx, writeIdx, type Idx } from '../datasets/idx.ts';
import { mnistDir } from '../datasets/mnist.ts';

const temps: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'rho-idx-'));
  temps.push(dir);
  return dir;
}
test.after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

test('reads the real MNIST files', async () => {
  const images = await readIdx(join(mnistDir(), 'train-images-idx3-ubyte'));
  assert.equal(images.dims, [60000, 28, 28]);
  assert.instance(images.data, Uint8Array);
  const labels = await readIdx(join(mnistDir(), 'train-labels-idx1-ubyte'));
  assert.equal(labels.dims, [60000]);
  assert.equal(Array.from(labels.data.subarray(0, 5)), [5, 0, 4, 1, 9]); // MNIST's well-known first labels
  assert.ok(Array.from(labels.data).every((v) => v >= 0 && v <= 9));
  assert.is(new Set(labels.data).size, 10);
  assert.ok(images.data.some((v) => v === 255) && images.data.some((v) => v === 0));
  const t10k = await readIdx(join(mnistDir(), 't10k-images-idx3-ubyte'));
  assert.equal(t10k.dims, [10000, 28, 28]);
});

test('multi-byte values are stored big-endian, as the format says', () => {
  const bytes = encodeIdx({ dims: [2], data: Int16Array.from([0x0102, -2]) });
  assert.equal(Array.from(bytes), [0, 0, 0x0b, 1, 0, 0, 0, 2, 0x01, 0x02, 0xff, 0xfe]);
  const f = parseIdx(Uint8Array.from([0, 0, 0x0d, 1, 0, 0, 0, 1, 0x3f, 0xc0, 0, 0]), 'one-float');
  assert.equal(Array.from(f.data), [1.5]); // 0x3fc00000 is 1.5 in IEEE-754 single precision
});

test('round-trips every IDX type', async () => {
  const dir = tempDir();
  const cases: Idx[] = [
    { dims: [2, 3], data: Uint8Array.from([0, 1, 2, 253, 254, 255]) },
    { dims: [3], data: Int8Array.from([-128, 0, 127]) },
    { dims: [2, 2], data: Int16Array.from([-32768, -1, 1, 32767]) },
    { dims: [2], data: Int32Array.from([-2147483648, 2147483647]) },
    { dims: [1, 3], data: Float32Array.from([-1.5, 0, 3.25]) },
    { dims: [2], data: Float64Array.from([Math.PI, -1e300]) },
  ];
  for (const [i, idx] of cases.entries()) {
    const path = join(dir, `f${i}`);
    await writeIdx(path, idx);
    const back = await readIdx(path);
    assert.equal(back.dims, idx.dims);
    assert.is(back.data.constructor, idx.data.constructor);
    assert.equal(Array.from(back.data), Array.from(idx.data));
  }
});

function errorOf(bytes: Uint8Array): string {
  try {
    parseIdx(bytes, '/data/t10k-images-idx3-ubyte');
  } catch (err) {
    assert.instance(err, DatasetError);
    return (err as Error).message;
  }
  throw new Error('expected a DatasetError');
}

test('each malformed file is refused with its name and the problem', () => {
  const good = encodeIdx({ dims: [2, 2, 2], data: new Uint8Array(8) });
  assert.match(errorOf(Uint8Array.from([0x1f, 0x8b, 8, 3])), /t10k-images-idx3-ubyte: not an IDX file: magic number/);
  assert.match(errorOf(Uint8Array.from([0, 0, 0x42, 1, 0, 0, 0, 1, 7])), /unknown IDX type code 0x42/);
  assert.match(errorOf(good.subarray(0, good.length - 3)), /t10k-images-idx3-ubyte: truncated: expected 24 bytes for u8\[2×2×2\], found 21/);
  assert.match(errorOf(Uint8Array.from([...good, 1, 2])), /2 unexpected bytes after/);
  assert.match(errorOf(encodeIdx({ dims: [1, 1], data: new Uint8Array(1) }).map((b, i) => (i === 7 ? 0 : b))), /dimension of size 0/);
  assert.match(errorOf(Uint8Array.from([0, 0, 8, 0])), /0 dimensions/);
  assert.match(errorOf(Uint8Array.from([0, 0, 8, 3, 0, 0])), /truncated header/);
  assert.match(errorOf(Uint8Array.from([0, 0])), /t10k-images-idx3-ubyte: too short/);
});

test('unreadable files and unwritable shapes are DatasetErrors too', async () => {
  try {
    await readIdx('/nonexistent/train-labels-idx1-ubyte');
    assert.unreachable('should throw');
  } catch (err) {
    assert.instance(err, DatasetError);
    assert.match((err as Error).message, /cannot read \/nonexistent\/train-labels-idx1-ubyte: ENOENT/);
  }
  assert.throws(() => encodeIdx({ dims: [2, 2], data: new Uint8Array(3) }), (e: Error) => e instanceof DatasetError && /do not match 3 values/.test(e.message));
  assert.throws(() => encodeIdx({ dims: [0], data: new Uint8Array(0) }), (e: Error) => e instanceof DatasetError && /positive/.test(e.message));
});

test('a truncated copy of the real t10k file is refused by readIdx', async () => {
  const dir = tempDir();
  const path = join(dir, 't10k-images-idx3-ubyte');
  const bytes = readFileSync(join(mnistDir(), 't10k-images-idx3-ubyte')).subarray(0, 1000);
  writeFileSync(path, bytes);
  try {
    await readIdx(path);
    assert.unreachable('should throw');
  } catch (err) {
    assert.instance(err, DatasetError);
    assert.match((err as Error).message, /t10k-images-idx3-ubyte: truncated: expected 7840016 bytes .*found 1000/);
  }
});

test.run();
