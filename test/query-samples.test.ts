import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SampledOracle } from '../bench/query-samples.ts';
import { initBackend } from '../engine/backend.ts';
import type { Answers64, Disclosure, Oracle } from '../serve/types.ts';

// The oracle under the wrapper answers row r with class r mod 3 at probability 0.8 and counts rows,
// so what the wrapper keeps can be checked row by row.
class CountingOracle implements Oracle {
  spent = 0;
  readonly budget = 100;
  readonly classes = 3;
  readonly disclosure: Disclosure = { kind: 'probs' };
  private answer(n: number): Float32Array {
    const y = new Float32Array(n * 3);
    for (let r = 0; r < n; r++) {
      const c = (this.spent + r) % 3;
      y.fill(0.1, r * 3, r * 3 + 3);
      y[r * 3 + c] = 0.8;
    }
    return y;
  }
  async query(x: tf.Tensor): Promise<tf.Tensor2D> {
    const n = x.shape[0];
    const y = tf.tensor2d(this.answer(n), [n, 3]);
    this.spent += n;
    return y;
  }
  async query64(x: Float64Array, n: number): Promise<Answers64> {
    const y = Float64Array.from(this.answer(n));
    this.spent += n;
    return { y };
  }
}

test('SampledOracle passes answers through and keeps the first rows with their answers', async () => {
  await initBackend('wasm');
  const inner = new CountingOracle();
  const sampled = new SampledOracle(inner, 4, 5);
  const rows = tf.tensor4d(Float32Array.from({ length: 3 * 4 }, (_, i) => i / 10 - 0.2), [3, 2, 2, 1]);
  const answer = await sampled.query(rows);
  assert.equal(Array.from(await answer.data()), Array.from(new CountingOracle()['answer'](3)));
  answer.dispose();
  rows.dispose();
  const more = await sampled.query64(Float64Array.from({ length: 4 * 4 }, () => 0.5), 4);
  assert.is(more.y.length, 12);
  assert.is(sampled.spent, 7, 'the wrapper spends what the oracle spends');

  const { images, captions } = sampled.samples();
  assert.equal(captions, ['0 (0.80)', '1 (0.80)', '2 (0.80)', '0 (0.80)', '1 (0.80)']);
  assert.is(images.length, 5 * 4);
  // Pixels outside [0, 1] are clipped for display; later rows are the float64 ones.
  assert.is(images[0], 0);
  assert.ok(Math.abs(images[5] - 0.3) < 1e-6);
  assert.is(images[4 * 4], 0.5);
});

test.run();
