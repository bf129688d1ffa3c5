import { trainStudent } from './student.ts';
import { buildTransferSet, normalizeRows } from './transfer.ts';
import type { Attack } from './types.ts';

/**
 * Knockoff Nets (Orekondy et al., CVPR 2019) with random sampling: query a random sample of the
 * pool and train on whatever comes back — soft targets from (top-k, rounded) probabilities,
 * one-hot rows from labels (which already sum to 1).
 */
export const knockoff: Attack = {
  name: 'knockoff',
  async run(ctx) {
    const { x, y } = await buildTransferSet(ctx);
    const targets = normalizeRows(y);
    y.dispose();
    return trainStudent(ctx, x, targets);
  },
};
