/**
 * Splitting one sweep across machines. Shard i of n (0-based, 0 ≤ i < n) runs the cells whose
 * position in expandCells' order is i modulo n. That order depends only on the config, so every
 * machine computes the same slices, and the slices partition the grid. Round-robin rather than
 * contiguous blocks: neighbouring cells differ in budget, the main driver of a cell's cost, so
 * each shard gets a like mix of cheap and dear cells.
 */

/** Thrown for a malformed --shard; the message says what is allowed. */
export class ShardError extends Error {
  readonly name = 'ShardError';
}

export interface Shard {
  /** 0-based: SLURM_ARRAY_TASK_ID (with --array=0-(n-1)) and JOB_COMPLETION_INDEX pass straight through. */
  index: number;
  count: number;
}

/** A whole, unsplit run is shard 0 of 1. */
export const WHOLE: Shard = { index: 0, count: 1 };

export function formatShard(s: Shard): string {
  return `${s.index}/${s.count}`;
}

/** Parses "i/n" with 0 ≤ i < n. */
export function parseShard(text: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) throw new ShardError(`--shard takes i/n (0-based shard i of n, e.g. 0/4), got "${text}"`);
  const [index, count] = [Number(m[1]), Number(m[2])];
  checkShard({ index, count }, `--shard ${text}`);
  return { index, count };
}

/** Throws unless count ≥ 1 and 0 ≤ index < count (integers); `what` names the source in the message. */
export function checkShard(s: Shard, what = 'shard'): void {
  if (!Number.isSafeInteger(s.count) || s.count < 1) throw new ShardError(`${what}: the shard count must be a whole number ≥ 1, got ${s.count}`);
  if (!Number.isSafeInteger(s.index) || s.index < 0 || s.index >= s.count) {
    throw new ShardError(`${what}: shards are numbered from 0, so the index must be 0 to ${s.count - 1}, got ${s.index}`);
  }
}

/** Whether the cell at `position` in the grid belongs to the shard. */
export function inShard(position: number, s: Shard): boolean {
  return position % s.count === s.index;
}

/** The shard's slice of the grid, in grid order. */
export function shardCells<T>(cells: readonly T[], s: Shard = WHOLE): T[] {
  return cells.filter((_, i) => inShard(i, s));
}

export function sameShard(a: Shard, b: Shard): boolean {
  return a.index === b.index && a.count === b.count;
}
