import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Answers64, Oracle } from '../serve/types.ts';
import { argmaxRows } from './metric.ts';
import { queryGridPng, safeName } from './plots.ts';
import type { Cell } from './types.ts';
import { writeAtomic } from './writers.ts';

/** Sample queries kept per (target, attack, side): enough for an 8 × 4 grid. */
export const SAMPLE_QUERIES = 32;

/** The grid image of one (target, attack, side), under the run folder's plots/. */
export function queryGridPath(runDir: string, cell: Pick<Cell, 'target' | 'attack' | 'side'>): string {
  return join(runDir, 'plots', `queries-${safeName(cell.target)}-${safeName(cell.attack)}-${safeName(cell.side)}.png`);
}

/** What the API said about a row, as a short caption: the class, and its probability when disclosed. */
function caption(answer: ArrayLike<number>, row: number, classes: number, label: number, leaf?: number): string {
  const p = answer[row * classes + label];
  const probability = p > 0 && p < 1 ? ` (${p.toFixed(2)})` : '';
  return `${label}${probability}${leaf === undefined ? '' : ` leaf ${leaf}`}`;
}

/**
 * An oracle that passes every query through and keeps the first rows it answered, with what it
 * answered. Copies are made of at most SAMPLE_QUERIES rows, so the attack's memory is untouched.
 */
export class SampledOracle implements Oracle {
  private readonly images: Float32Array;
  private readonly captions: string[] = [];

  constructor(
    private readonly inner: Oracle,
    private readonly pixels: number,
    private readonly keep = SAMPLE_QUERIES,
  ) {
    this.images = new Float32Array(keep * pixels);
  }

  get budget(): number {
    return this.inner.budget;
  }
  get spent(): number {
    return this.inner.spent;
  }
  get disclosure(): Oracle['disclosure'] {
    return this.inner.disclosure;
  }
  get classes(): number {
    return this.inner.classes;
  }

  async query(x: tf.Tensor): Promise<tf.Tensor2D> {
    const answer = await this.inner.query(x);
    const room = this.keep - this.captions.length;
    if (room > 0) {
      const take = Math.min(room, x.shape[0]);
      const rows = tf.tidy(() => x.reshape([x.shape[0], -1]).slice([0, 0], [take, -1]));
      const answered = tf.tidy(() => answer.slice([0, 0], [take, -1]));
      this.keepRows(await rows.data(), await answered.data(), take);
      rows.dispose();
      answered.dispose();
    }
    return answer;
  }

  async query64(x: Float64Array, n: number): Promise<Answers64> {
    const answer = await this.inner.query64(x, n);
    const take = Math.min(this.keep - this.captions.length, n);
    if (take > 0) this.keepRows(x.subarray(0, take * this.pixels), answer.y.subarray(0, take * this.classes), take, answer.leaves);
    return answer;
  }

  /** The kept rows as n × pixels in [0, 1] (queries may leave it: clipped for display) and their captions. */
  samples(): { images: Float32Array; captions: string[] } {
    return { images: this.images.slice(0, this.captions.length * this.pixels), captions: [...this.captions] };
  }

  private keepRows(rows: ArrayLike<number>, answers: ArrayLike<number>, take: number, leaves?: Int32Array): void {
    const labels = argmaxRows(answers, this.classes);
    const offset = this.captions.length * this.pixels;
    for (let i = 0; i < take * this.pixels; i++) {
      const v = rows[i];
      this.images[offset + i] = Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0; // NaN: a missing feature
    }
    for (let r = 0; r < take; r++) this.captions.push(caption(answers, r, this.classes, labels[r], leaves?.[r]));
  }
}

/**
 * Keeps one grid per (target, attack, side): the first cell of each to run wraps its oracle, unless
 * an earlier attempt of this run (resume, another shard's folder) already wrote the image.
 */
export class QuerySampler {
  private readonly claimed = new Set<string>();

  constructor(
    private readonly runDir: string | undefined,
    private readonly inputShape: readonly number[],
    private readonly log: (message: string) => void = () => {},
  ) {}

  wrap(oracle: Oracle, cell: Cell): { oracle: Oracle; save(): Promise<void> } {
    const [h, w, channels] = this.inputShape;
    const path = this.runDir && queryGridPath(this.runDir, cell);
    // Greyscale images only: the grid draws one channel per pixel.
    if (!path || channels !== 1 || this.claimed.has(path) || existsSync(path)) return { oracle, save: async () => {} };
    this.claimed.add(path);
    const sampled = new SampledOracle(oracle, h * w);
    return {
      oracle: sampled,
      // A picture is a convenience: failing to draw it is logged, never fails the cell.
      save: async () => {
        const { images, captions } = sampled.samples();
        if (!captions.length) return;
        try {
          await mkdir(join(this.runDir!, 'plots'), { recursive: true });
          await writeAtomic(path, await queryGridPng(images, h, w, captions, 8));
        } catch (err) {
          this.log(`could not draw sample queries to ${path}: ${(err as Error).message}`);
        }
      },
    };
  }
}
