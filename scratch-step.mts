import * as tf from '@tensorflow/tfjs';
import { initBackend } from './engine/backend.ts';
import { buildStudent } from './models/students.ts';
import { makeTrainStep } from './models/train.ts';
const arch = (process.argv[2] ?? 'cnn-small') as any;
const batch = Number(process.argv[3] ?? 128);
await initBackend((process.argv[4] ?? 'webgpu') as any);
let dispatches = 0;
const P = (globalThis as any).GPUComputePassEncoder?.prototype;
if (P) { const orig = P.dispatchWorkgroups; P.dispatchWorkgroups = function (...a: any[]) { dispatches++; return orig.apply(this, a); }; }
const model = buildStudent(arch, [28, 28, 1], 10);
const trainer = makeTrainStep(model, 1e-3);
const x = tf.randomUniform([batch, 28, 28, 1]);
const y = tf.oneHot(tf.randomUniform([batch], 0, 10, 'int32'), 10).toFloat() as tf.Tensor2D;
const step = async () => { const l = trainer.step(x, y); await l.data(); l.dispose(); };
for (let i = 0; i < 3; i++) await step();
dispatches = 0; await step(); console.log(`${arch} b${batch} ${trainer.gradients}: ${dispatches} dispatches per step`);
let t0 = performance.now(); for (let i = 0; i < 5; i++) await step(); console.log(`wall ${((performance.now() - t0) / 5).toFixed(1)} ms/step`);
const prof = await tf.profile(async () => { const l = trainer.step(x, y); await l.data(); l.dispose(); });
const rows = new Map<string, { ms: number; n: number }>();
for (const k of prof.kernels) { const r = rows.get(k.name) ?? { ms: 0, n: 0 }; r.ms += (k.kernelTimeMs as number) || 0; r.n++; rows.set(k.name, r); }
const total = [...rows.values()].reduce((s, r) => s + r.ms, 0);
console.log(`kernels: ${prof.kernels.length}, GPU ${total.toFixed(1)} ms`);
for (const [n, r] of [...rows].sort((a, b) => b[1].ms - a[1].ms).slice(0, 12)) console.log(`  ${n.padEnd(32)} ${r.ms.toFixed(2).padStart(8)} ms ${(100 * r.ms / total).toFixed(1).padStart(5)}% ×${r.n}`);
