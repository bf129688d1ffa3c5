import * as tf from '@tensorflow/tfjs';
import { withSeed } from '../models/seed.ts';
import { buildStudent } from '../models/students.ts';
import { asImitation, fitSoft } from '../models/train.ts';
import type { Imitation } from '../models/types.ts';
import { studentArch } from './transfer.ts';
import type { AttackContext } from './types.ts';

/** Knockoff's last stage: a fresh student, seeded, trained on the transfer set. Disposes x and targets. */
export async function trainStudent(
  ctx: AttackContext,
  x: tf.Tensor,
  targets: tf.Tensor2D,
  temperature?: number,
): Promise<Imitation> {
  let model: tf.LayersModel | undefined;
  try {
    // Only the weight initialisers read Math.random; fitSoft shuffles with its own seeded stream,
    // so training need not hold the global generator across awaits (concurrent cells stay apart).
    model = await withSeed(ctx.seed, () => buildStudent(studentArch(ctx), ctx.inputShape, ctx.classes));
    await fitSoft(model, x, targets, {
      ...ctx.student,
      seed: ctx.seed,
      temperature,
      onEpoch: (epoch) => ctx.onProgress?.(epoch, ctx.student.epochs, 'epochs'),
    });
  } catch (err) {
    model?.dispose();
    throw err;
  } finally {
    tf.dispose([x, targets]);
  }
  return asImitation(model);
}
