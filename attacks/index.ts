import { ACTIVE_ATTACKS } from './active.ts';
import { adaptiveKnockoff } from './adaptive.ts';
import { copycat } from './copycat.ts';
import { distillation } from './distillation.ts';
import { equationSolving } from './equation-solving.ts';
import { jbda } from './jbda.ts';
import { knockoff } from './knockoff.ts';
import { lowdMeek } from './lowd-meek.ts';
import { pathFinding } from './path-finding.ts';
import { adaptiveRetraining, uniformRetraining } from './retraining.ts';
import type { Attack } from './types.ts';

export const ATTACKS: Record<string, Attack> = {
  knockoff,
  'adaptive-knockoff': adaptiveKnockoff,
  distillation,
  copycat,
  jbda,
  ...ACTIVE_ATTACKS,
  'equation-solving': equationSolving,
  'path-finding': pathFinding,
  'lowd-meek': lowdMeek,
  'adaptive-retraining': adaptiveRetraining,
  'uniform-retraining': uniformRetraining,
};

export function getAttack(name: string): Attack {
  const attack = ATTACKS[name];
  if (!attack) throw new Error(`unknown attack "${name}": choose one of ${Object.keys(ATTACKS).join(', ')}`);
  return attack;
}
