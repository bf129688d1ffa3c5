import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO_ROOT } from '../bench/manifest.ts';
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

test('webgpu either runs a matmul exactly as cpu does and says what adapter it used, or is refused naming what it lacks', () => {
  // In a child process: a started WebGPU backend would stay registered for the tests that follow.
  const script = `
    import * as tf from '@tensorflow/tfjs';
    import { initBackend } from './models/backend.ts';
    const a = [[1, 2, 3], [4, 5, 6]], b = [[1, 0], [0, 1], [2, -1]];
    try {
      const info = await initBackend('webgpu');
      const got = await tf.matMul(tf.tensor2d(a), tf.tensor2d(b)).array();
      console.log(JSON.stringify({ ok: true, info, got }));
    } catch (err) {
      console.log(JSON.stringify({ ok: false, name: err.name, message: err.message }));
    }`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  if (out.ok) {
    assert.is(out.info.name, 'webgpu');
    assert.type(out.info.gpu, 'boolean');
    assert.match(out.info.reason, 'WebGPU (Dawn) on');
    assert.equal(out.got, [[7, -1], [16, -1]]);
  } else {
    assert.is(out.name, 'BackendUnavailable');
    assert.match(out.message, /backend "webgpu"( needs the optional packages|: Dawn found no GPU adapter)/);
  }
});

test.run();
