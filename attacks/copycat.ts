import { trainStudent } from './student.ts';
import { buildTransferSet, hardLabels } from './transfer.ts';
import type { Attack } from './types.ts';

/** CopyCat CNN (Correia-Silva et al., IJCNN 2018): the pool labelled by the API's top class, hard labels only. */
export const copycat: Attack = {
  name: 'copycat',
  async run(ctx) {
    const { x, y } = await buildTransferSet(ctx);
    const targets = hardLabels(y);
    y.dispose();
    return trainStudent(ctx, x, targets);
  },
};
