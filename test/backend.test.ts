import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO_ROOT } from '../bench/manifest.ts';
import { BackendUnavailable, initBackend, type BackendName } from '../engine/backend.ts';
import { SYNC_READ_MESSAGE } from '../engine/webgpu/backend.ts';
import { probeDawn } from '../engine/webgpu/probe.ts';
import { haveWebgpu } from './helpers.ts';

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

test('auto takes only a GPU: without one it runs wasm and says why it skipped webgpu and tensorflow', async () => {
  const info = await initBackend('auto');
  if (info.gpu) return; // a GPU box: auto took webgpu or tensorflow on it
  assert.is(info.name, 'wasm');
  assert.match(info.reason, /skipped webgpu: (only a software adapter \(.+\), which is a CPU|Dawn found no GPU adapter|the optional package "webgpu" \(Dawn\) did not load)/);
  assert.match(info.reason, /; tensorflow: /);
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

test('webgpu starts on the adapter Dawn offers, says whether it is a GPU, and refuses synchronous reads of GPU data clearly', async () => {
  if (!(await haveWebgpu('the backend start'))) return;
  const probe = await probeDawn();
  const info = await initBackend('webgpu');
  assert.is(info.name, 'webgpu');
  assert.is(tf.getBackend(), 'webgpu');
  assert.ok(probe.found);
  assert.is(info.gpu, probe.found && probe.hardware);
  assert.match(info.reason, 'WebGPU (Dawn) on');
  if (/llvmpipe/.test(info.reason)) assert.is(info.gpu, false, 'llvmpipe is a CPU');
  const product = tf.matMul(tf.tensor2d([[1, 2, 3], [4, 5, 6]]), tf.tensor2d([[1, 0], [0, 1], [2, -1]]));
  assert.equal(await product.array(), [[7, -1], [16, -1]]);
  assert.throws(() => tf.add(product, 1).dataSync(), (err: Error) => err.message === SYNC_READ_MESSAGE);
  assert.equal(Array.from(tf.tensor1d([1, 2]).dataSync()), [1, 2], 'data still on the CPU reads synchronously');
  tf.disposeVariables();
  await initBackend('wasm');
});

test('webgpu without a Vulkan driver is refused in one line that says what it needs, and Dawn prints nothing', () => {
  const script = `
    import { initBackend } from './engine/backend.ts';
    try {
      await initBackend('webgpu');
      console.log(JSON.stringify({ ok: true }));
    } catch (err) {
      console.log(JSON.stringify({ ok: false, name: err.name, message: err.message }));
    }`;
  const env: NodeJS.ProcessEnv = { ...process.env, VK_DRIVER_FILES: '/nonexistent/icd.json', VK_ICD_FILENAMES: '/nonexistent/icd.json' };
  delete env.RHOBENCH_DAWN_PROBE;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, env, encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.is(out.ok, false);
  assert.is(out.name, 'BackendUnavailable');
  assert.match(out.message, /^backend "webgpu": (Dawn found no GPU adapter: on Linux it needs the Vulkan loader .*lavapipe|the optional package "webgpu" \(Dawn\) did not load)/);
  assert.not.match(out.message, /\n/);
  assert.is(r.stderr.trim(), '', 'Dawn\'s own warnings stay in the probe');
});

test.run();
