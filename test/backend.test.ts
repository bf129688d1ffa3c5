import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BackendUnavailable, initBackend, type BackendName } from '../models/backend.ts';

test('wasm loads and says it uses no GPU', async () => {
  const info = await initBackend('wasm');
  assert.is(info.name, 'wasm');
  assert.is(info.gpu, false);
  assert.is(tf.getBackend(), 'wasm');
});

test('tensorflow is refused clearly when @tensorflow/tfjs-node-gpu is absent', async () => {
  let present = true;
  try {
    await import('@tensorflow/tfjs-node-gpu' as string);
  } catch {
    present = false;
  }
  if (present) return; // a GPU box with the package: nothing to refuse
  try {
    await initBackend('tensorflow');
    assert.unreachable('should throw');
  } catch (err) {
    assert.instance(err, BackendUnavailable);
    assert.match((err as Error).message, '@tensorflow/tfjs-node-gpu');
  }
});

test('auto falls through to wasm here and says why it skipped tensorflow', async () => {
  const info = await initBackend('auto');
  assert.ok(info.name === 'wasm' || info.name === 'tensorflow');
  if (info.name === 'wasm') assert.match(info.reason, /skipped tensorflow/);
});

test('cpu loads; an unknown name is refused', async () => {
  assert.is((await initBackend('cpu')).name, 'cpu');
  try {
    await initBackend('webgl2' as BackendName);
    assert.unreachable('should throw');
  } catch (err) {
    assert.instance(err, BackendUnavailable);
    assert.match((err as Error).message, /unknown backend "webgl2"/);
  }
  await initBackend('wasm');
});

test.run();
