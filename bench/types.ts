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
