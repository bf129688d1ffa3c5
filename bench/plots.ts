import { mkdir, readFile } from 'node:fs/promises';
import { readRunJson, RunFolderError, writeAtomic } from './writers.ts';
import { join } from 'node:path';
import sharp from 'sharp';
import type { TopLevelSpec } from 'vega-lite';
import { z } from 'zod';
import type { Curve, CurvePoint, TaskCurve } from './aggregate.ts';

/** Names of the layers in a ρ plot; Vega puts them in the SVG's class names (`rho_line_marks`…). */
export const RHO_LAYERS = { band: 'rho_band', line: 'rho_line', points: 'rho_points' } as const;

/** One plotted row: a curve point that has a ρ. */
export interface RhoPlotRow {
  series: string;
  attack: string;
  side: string;
  student: string;
  budget: number;
  rho: number;
  rhoLow: number;
  rhoHigh: number;
  seeds: number;
}

/** What a plot needs of a curve: Curve fits, and so does a task curve turned by taskCurveAsCurve. */
export type PlotCurve = Pick<Curve, 'target' | 'attack' | 'student' | 'side' | 'targetAccuracy'> & {
  points: Pick<CurvePoint, 'budget' | 'n' | 'rhoMean' | 'rhoLow' | 'rhoHigh'>[];
};

function seriesLabel(c: PlotCurve, showStudent: boolean): string {
  return [c.attack, c.side, ...(showStudent ? [c.student] : [])].join(' · ');
}

/** The rows rhoCurveSpec plots for one target: points without a ρ (failed, not applicable) are left out. */
export function rhoPlotRows(curves: readonly PlotCurve[], target: string): RhoPlotRow[] {
  const mine = curves.filter((c) => c.target === target);
  const showStudent = new Set(mine.map((c) => c.student)).size > 1;
  return mine.flatMap((c) =>
    c.points
      .filter((p) => p.rhoMean !== null && Number.isFinite(p.rhoMean) && p.budget > 0)
      .map((p) => {
        const rho = p.rhoMean as number;
        // A t-interval over few seeds can reach below 0, where no ρ can be.
        return {
          series: seriesLabel(c, showStudent),
          attack: c.attack,
          side: c.side,
          student: c.student,
          budget: p.budget,
          rho,
          rhoLow: Math.max(0, p.rhoLow ?? rho),
          rhoHigh: p.rhoHigh ?? rho,
          seeds: p.n,
        };
      }),
  );
}

export interface RhoSpecOptions {
  /** Replaces the default title (target and its accuracy). */
  title?: string;
  width?: number;
  height?: number;
}

/**
 * ρ versus query budget for one target: a line per attack × side (× student when the target has
 * more than one), points at the measured budgets and a band over the seeds' 95% interval.
 */
export function rhoCurveSpec(curves: readonly PlotCurve[], target: string, opts: RhoSpecOptions = {}): TopLevelSpec {
  const rows = rhoPlotRows(curves, target);
  const accuracy = curves.find((c) => c.target === target)?.targetAccuracy;
  const title = opts.title ?? `${target}${accuracy !== undefined && Number.isFinite(accuracy) ? ` (target accuracy ${accuracy.toFixed(3)})` : ''}`;
  // ρ lies in [0, 1] for classification; a regression imitation can do worse than predicting 0.
  const top = Math.max(1, ...rows.map((r) => r.rhoHigh));
  const budgets = [...new Set(rows.map((r) => r.budget))].sort((a, b) => a - b);
  const showStudent = new Set(curves.filter((c) => c.target === target).map((c) => c.student)).size > 1;
  const y = { type: 'quantitative' as const, scale: { domain: [0, top] } };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle: 'ρ = 0: perfect copy; band: 95% interval over seeds' },
    width: opts.width ?? 460,
    height: opts.height ?? 280,
    background: 'white',
    data: { values: rows as unknown as Record<string, unknown>[] },
    encoding: {
      x: {
        field: 'budget',
        type: 'quantitative',
        // Ticks at the measured budgets, with a little room either side of them.
        scale: { type: 'log', nice: false, domain: budgets.length ? [budgets[0] / 1.25, budgets[budgets.length - 1] * 1.25] : [1, 10] },
        axis: { values: budgets, format: '~s', grid: true },
        title: 'query budget (log scale)',
      },
      color: {
        field: 'series',
        type: 'nominal',
        title: showStudent ? 'attack · side · student' : 'attack · side',
        scale: { scheme: 'tableau10' },
        legend: { orient: 'bottom', columns: 2, labelLimit: 320, symbolType: 'stroke', symbolOpacity: 1, symbolStrokeWidth: 3 },
      },
    },
    layer: [
      {
        name: RHO_LAYERS.band,
        mark: { type: 'area', opacity: 0.18 },
        encoding: { y: { field: 'rhoLow', ...y, title: 'ρ (imitation privacy)' }, y2: { field: 'rhoHigh' } },
      },
      { name: RHO_LAYERS.line, mark: { type: 'line', strokeWidth: 2 }, encoding: { y: { field: 'rho', ...y } } },
      { name: RHO_LAYERS.points, mark: { type: 'point', filled: true, size: 40 }, encoding: { y: { field: 'rho', ...y } } },
    ],
  };
}

// Loaded on first use, and by import(): vega's optional canvas module awaits at top level, which
// the CommonJS path the test runner takes through tsx (`uvu -r tsx`) cannot load.
let engines: Promise<[typeof import('vega'), typeof import('vega-lite')]> | undefined;
const loadVega = () => (engines ??= Promise.all([import('vega'), import('vega-lite')]));

/** Vega-Lite → Vega → SVG, headless (no canvas, no DOM). */
export async function renderSvg(vlSpec: TopLevelSpec): Promise<string> {
  const [vega, vegaLite] = await loadVega();
  const view = new vega.View(vega.parse(vegaLite.compile(vlSpec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** SVG → PNG; scale 2 renders at 144 dpi, sharp enough for slides. */
export async function svgToPng(svg: string, scale = 2): Promise<Buffer> {
  if (!(scale > 0)) throw new RangeError(`scale must be > 0, got ${scale}`);
  return sharp(Buffer.from(svg), { density: 72 * scale }).png().toBuffer();
}

/** A file-name-safe form of a target id ('mlp@subset-0137' → 'mlp_subset-0137'). */
export function safeName(id: string): string {
  const name = id.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[._]+/, '');
  return name || 'target';
}

/** A task curve as a plot reads it: accuracy is the task targets' mean. */
export function taskCurveAsCurve(c: TaskCurve): PlotCurve {
  return { target: c.target, attack: c.attack, student: c.student, side: c.side, targetAccuracy: c.targetAccuracyMean ?? NaN, points: c.points };
}

/** The curves of a run as rho.json holds them. */
export interface RhoFile {
  curves: Curve[];
  taskCurves?: TaskCurve[];
}

export interface PlotPlan {
  /** File stem under plots/: 'rho-<target>' (suffix '-tasks' for a task-averaged plot). */
  name: string;
  target: string;
  spec: TopLevelSpec;
}

/**
 * One plot per target that has a ρ somewhere; a sampled task set gets one plot of its task-averaged curves (E_tasks ρ)
 * instead of one per member task, which would be as many plots as tasks.
 */
export function planPlots(rho: RhoFile): PlotPlan[] {
  const taskCurves = (rho.taskCurves ?? []).map(taskCurveAsCurve);
  const taskBases = [...new Set(taskCurves.map((c) => c.target))];
  const isMember = (target: string) => taskBases.some((b) => target.startsWith(`${b}@`));
  const targets = [...new Set(rho.curves.map((c) => c.target))].filter((t) => !isMember(t));
  const used = new Set<string>();
  const stem = (base: string) => {
    let name = base;
    for (let i = 2; used.has(name); i++) name = `${base}-${i}`;
    used.add(name);
    return name;
  };
  // A target with no ρ at all (every cell failed or not applicable) gets no empty frame.
  const plans: PlotPlan[] = targets
    .filter((target) => rhoPlotRows(rho.curves, target).length > 0)
    .map((target) => ({ name: stem(`rho-${safeName(target)}`), target, spec: rhoCurveSpec(rho.curves, target) }));
  for (const base of taskBases) {
    const mine = taskCurves.filter((c) => c.target === base);
    if (!rhoPlotRows(mine, base).length) continue;
    const tasks = (rho.taskCurves ?? []).find((c) => c.target === base)?.points[0]?.tasks;
    const accuracy = mine[0].targetAccuracy;
    const title = `${base}: ρ averaged over ${tasks ?? 'its'} tasks${Number.isFinite(accuracy) ? ` (mean target accuracy ${accuracy.toFixed(3)})` : ''}`;
    plans.push({ name: stem(`rho-${safeName(base)}-tasks`), target: base, spec: rhoCurveSpec(mine, base, { title }) });
  }
  return plans;
}


export { readRunJson, RunFolderError };


// The fields plots and the report read; anything else in rho.json passes through.
const point = z.looseObject({ budget: z.number(), n: z.number(), rhoMean: z.number().nullable(), rhoLow: z.number().nullable(), rhoHigh: z.number().nullable(), status: z.string() });
const curveFields = { target: z.string(), attack: z.string(), student: z.string(), side: z.string() };
const rhoFileSchema = z.looseObject({
  curves: z.array(z.looseObject({ ...curveFields, targetAccuracy: z.number(), points: z.array(point) })),
  taskCurves: z.array(z.looseObject({ ...curveFields, targetAccuracyMean: z.number().nullable(), points: z.array(point.extend({ tasks: z.number() })) })).optional(),
}) as unknown as z.ZodType<RhoFile>;

/** A run's rho.json, written when the sweep ends (finished or interrupted). */
export function readRhoFile(runDir: string): Promise<RhoFile> {
  return readRunJson(join(runDir, 'rho.json'), rhoFileSchema);
}

/** Writes plots/rho-<target>.svg and .png for every target in the run's rho.json; returns the paths written. */
export async function writePlots(runDir: string): Promise<string[]> {
  const rho = await readRhoFile(runDir);
  const dir = join(runDir, 'plots');
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  for (const plan of planPlots(rho)) {
    const svg = await renderSvg(plan.spec);
    const svgPath = join(dir, `${plan.name}.svg`);
    const pngPath = join(dir, `${plan.name}.png`);
    await writeAtomic(svgPath, Buffer.from(svg));
    await writeAtomic(pngPath, await svgToPng(svg));
    written.push(svgPath, pngPath);
  }
  return written;
}

export interface QueryGridOptions {
  /** Screen pixels per image pixel (default: enough for a 28-pixel image to be 84 pixels wide). */
  scale?: number;
  /** Gap between tiles, in pixels. */
  gap?: number;
  /** Height of the label strip under each tile. */
  labelHeight?: number;
}

function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** Where queryGridPng puts things: exported so callers (and tests) know the image size in advance. */
export function queryGridLayout(n: number, h: number, w: number, columns: number, opts: QueryGridOptions = {}) {
  const scale = opts.scale ?? Math.max(1, Math.round(84 / Math.max(h, w)));
  const gap = opts.gap ?? 6;
  const labelHeight = opts.labelHeight ?? 18;
  const cols = Math.min(columns, Math.max(n, 1));
  const rows = Math.ceil(n / cols);
  const tileW = w * scale;
  const tileH = h * scale;
  return {
    scale,
    gap,
    labelHeight,
    columns: cols,
    rows,
    tileW,
    tileH,
    width: gap + cols * (tileW + gap),
    height: gap + rows * (tileH + labelHeight + gap),
    left: (i: number) => gap + (i % cols) * (tileW + gap),
    top: (i: number) => gap + Math.floor(i / cols) * (tileH + labelHeight + gap),
  };
}

/**
 * A grid of sample query images (n × h × w greyscale in [0, 1], row-major), each tile scaled up
 * with nearest-neighbour pixels and the label the API returned for it written underneath. → PNG.
 */
export async function queryGridPng(
  images: Float32Array,
  h: number,
  w: number,
  labels: readonly string[],
  columns: number,
  opts: QueryGridOptions = {},
): Promise<Buffer> {
  const n = labels.length;
  for (const [name, v] of [['h', h], ['w', w], ['columns', columns]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`queryGridPng: ${name} must be a positive integer, got ${v}`);
  }
  if (n === 0) throw new RangeError('queryGridPng: no images (labels is empty)');
  if (images.length !== n * h * w) {
    throw new RangeError(`queryGridPng: images has ${images.length} values, expected ${n} labels × ${h} × ${w} = ${n * h * w}`);
  }
  const layout = queryGridLayout(n, h, w, columns, opts);
  const tiles = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const pixels = new Uint8Array(h * w);
      for (let j = 0; j < h * w; j++) {
        const v = images[i * h * w + j];
        if (!Number.isFinite(v)) throw new RangeError(`queryGridPng: image ${i} has a non-finite pixel (${v}) at ${j}`);
        pixels[j] = Math.round(Math.min(1, Math.max(0, v)) * 255);
      }
      const input = await sharp(pixels, { raw: { width: w, height: h, channels: 1 } })
        .resize(layout.tileW, layout.tileH, { kernel: 'nearest' })
        .png()
        .toBuffer();
      return { input, left: layout.left(i), top: layout.top(i) };
    }),
  );
  const fontSize = Math.max(9, Math.min(14, layout.labelHeight - 4));
  const text = labels
    .map((label, i) => {
      const x = layout.left(i) + layout.tileW / 2;
      const y = layout.top(i) + layout.tileH + layout.labelHeight - 4;
      return `<text x="${x}" y="${y}" text-anchor="middle">${escapeXml(label)}</text>`;
    })
    .join('');
  const overlay = `<svg xmlns="http://www.w3.org/2000/svg" width="${layout.width}" height="${layout.height}"><g font-family="DejaVu Sans, sans-serif" font-size="${fontSize}" fill="#222">${text}</g></svg>`;
  return sharp({ create: { width: layout.width, height: layout.height, channels: 3, background: '#ffffff' } })
    .composite([...tiles, { input: Buffer.from(overlay), left: 0, top: 0 }])
    .png()
    .toBuffer();
}
