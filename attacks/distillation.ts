import * as tf from '@tensorflow/tfjs';
import { describeDisclosure, givesProbabilities } from '../serve/disclosure.ts';
import { trainStudent } from './student.ts';
import { buildTransferSet, normalizeRows } from './transfer.ts';
import { NotApplicable, type Attack } from './types.ts';

/** Teacher probabilities softened by temperature T: p^(1/T), renormalised (softmax(log p / T)). */
export function soften(probs: tf.Tensor2D, temperature: number): tf.Tensor2D {
  return tf.tidy(() => tf.softmax(tf.div(tf.log(tf.add(probs, 1e-12)), temperature)) as tf.Tensor2D);
}

/**
 * Knowledge distillation (Hinton et al., 2015) against an API: the student matches the
 * target's temperature-softened probabilities. Without probabilities there is nothing to distil.
 */
export function makeDistillation(opts: { temperature?: number } = {}): Attack {
  const temperature = opts.temperature ?? 4;
  if (!(temperature > 0)) throw new RangeError(`distillation temperature must be positive, got ${temperature}`);
  return {
    name: 'distillation',
    async run(ctx) {
      if (!givesProbabilities(ctx.side.disclosure)) {
        throw new NotApplicable(
          `distillation needs probabilities, but the API discloses ${describeDisclosure(ctx.side.disclosure)}`,
        );
      }
      const { x, y } = await buildTransferSet(ctx);
      const targets = tf.tidy(() => soften(normalizeRows(y), temperature));
      y.dispose();
      return trainStudent(ctx, x, targets, temperature);
    },
  };
}

export const distillation = makeDistillation();
