export interface Cell {
  target: string;
  attack: string;
  student: string;
  side: string;
  budget: number;
  seed: number;
}

export type CellStatus = 'ok' | 'not-applicable' | 'failed';

export interface CellResult extends Cell {
  /**
   * The task the target learns ('digits', 'parity', 'subset-0137', …). The target id already
   * tells cells apart; this says what a sampled target (`base@task`) was asked. Absent in rows
   * written before tasks were recorded.
   */
  task?: string;
  status: CellStatus;
  /** Imitation privacy on eval: 1 − agreement (classification). null unless status is 'ok'. */
  rho: number | null;
  agreement: number | null;
  studentAccuracy: number | null;
  targetAccuracy: number;
  queries: number;
  seconds: number;
  backend: string;
  gpu: boolean;
  error?: string;
}
