import type { PoolSpec, Split } from '../datasets/types.ts';
import type { Imitation, ModelClass, StudentArch, StudentSpec } from '../models/types.ts';
import type { Disclosure, Oracle } from '../serve/types.ts';

/** One level of the attacker's side information S, plus the query distribution X̃ and the answers ỹ it gets. */
export interface SideInfo {
  name: string;
  pool: PoolSpec;
  disclosure: Disclosure;
  architecture: 'known' | 'unknown';
}

export interface AttackContext {
  oracle: Oracle;
  /** The attacker's own data to draw queries from (labels there are not to be used by attacks). */
  pool: Split;
  inputShape: [number, number, number];
  /** Classes of the target's task (2 for a binary task). */
  classes: number;
  side: SideInfo;
  student: StudentSpec;
  /** The target's own architecture, when it has one; used when side.architecture is 'known'. */
  targetArch?: StudentArch;
  /**
   * The target's model class and shape, present only when side.architecture is 'known'. The exact
   * attacks (equation solving, path finding, Lowd–Meek) need it and are NotApplicable without it.
   */
  known?: ModelClass;
  seed: number;
  onProgress?(done: number, total: number, phase: string): void;
}

export interface Attack {
  name: string;
  /** Spends at most ctx.oracle.budget queries and returns a trained imitation. */
  run(ctx: AttackContext): Promise<Imitation>;
}

/** The attack cannot run with this side information (e.g. distillation with label-only answers). */
export class NotApplicable extends Error {
  readonly name = 'NotApplicable';
}
