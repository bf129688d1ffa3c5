import { access, readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { z } from 'zod';
import { toCurves, toTaskCurves, type CurvePoint, type TaskCurvePoint } from './aggregate.ts';
import { expandCells } from './grid.ts';
import type { Manifest } from './manifest.ts';
import { queryGridPath } from './query-samples.ts';
import { shardCells, WHOLE, type Shard } from './shard.ts';
import { planPlots, readRhoFile, readRunJson, renderSvg, RunFolderError, type RhoFile } from './plots.ts';
import type { CellResult } from './types.ts';
import { readCells, writeAtomic } from './writers.ts';

export { RunFolderError } from './plots.ts';

// Only the fields the report reads; the rest of the manifest passes through untouched.
const manifestSchema = z.looseObject({
  runId: z.string(),
  status: z.enum(['running', 'finished', 'interrupted']),
  startedAt: z.string(),
  finishedAt: z.string().optional(),
  rhobench: z.string().optional(),
  config: z.looseObject({ name: z.string(), description: z.string().optional() }),
  backend: z.looseObject({ name: z.string(), gpu: z.boolean(), reason: z.string().optional() }),
  packages: z.record(z.string(), z.string().nullable()).optional(),
  gitCommit: z.string().nullable().optional(),
  machine: z
    .looseObject({
      hostname: z.string(),
      platform: z.string(),
      release: z.string(),
      cpus: z.number(),
      cpuModel: z.string(),
      memoryGiB: z.number(),
      node: z.string(),
    })
    .partial()
    .optional(),
  targets: z.array(z.looseObject({ id: z.string(), family: z.string(), testAccuracy: z.number() })).optional(),
  cells: z.object({ total: z.number(), ok: z.number(), notApplicable: z.number(), failed: z.number() }).optional(),
});

type ReportManifest = z.output<typeof manifestSchema>;

const epsDeltaSchema = z.looseObject({
  level: z.number().optional(),
  interval: z.string().optional(),
  epsilons: z.array(z.number()),
  rows: z.array(
    z.looseObject({
      target: z.string(),
      tasks: z.number().optional(),
      attack: z.string(),
      student: z.string(),
      side: z.string(),
      budget: z.number(),
      epsilon: z.number(),
      trials: z.number(),
      successes: z.number(),
      deltaHat: z.number().nullable(),
      deltaLow: z.number(),
      deltaHigh: z.number(),
    }),
  ),
});

type EpsDeltaFile = z.output<typeof epsDeltaSchema>;

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Everything the report shows, read from a run folder. */
export interface RunData {
  dir: string;
  manifest: ReportManifest;
  cells: CellResult[];
  tornLine: boolean;
  rho: RhoFile;
  /** False for a running run: its curves are computed from cells.jsonl, since rho.json is written at the end. */
  rhoFromFile: boolean;
  epsDelta?: EpsDeltaFile;
  /** Cells the config asks for, when the manifest's config can be expanded. */
  plannedCells?: number;
}

export async function readRun(runDir: string): Promise<RunData> {
  const dir = resolve(runDir);
  if (!(await exists(dir))) throw new RunFolderError(`run folder ${dir} does not exist`);
  const manifestPath = join(dir, 'manifest.json');
  const manifest = await readRunJson(manifestPath, manifestSchema);
  const running = manifest.status === 'running';
  const cellsPath = join(dir, 'cells.jsonl');
  if (!running && !(await exists(cellsPath)) && (manifest.cells?.total ?? 0) > 0) {
    throw new RunFolderError(`${cellsPath} is missing, but ${manifestPath} says the run had ${manifest.cells?.total} cells`);
  }
  let read: Awaited<ReturnType<typeof readCells>>;
  try {
    read = await readCells(cellsPath);
  } catch (err) {
    throw new RunFolderError((err as Error).message.includes(cellsPath) ? (err as Error).message : `${cellsPath}: ${(err as Error).message}`);
  }
  const taskSets = Array.isArray((manifest.config as { taskSets?: unknown }).taskSets)
    ? ((manifest.config as unknown as Manifest['config']).taskSets ?? [])
    : [];
  // rho.json is written when a run ends (a resumed run may hold an old one); while it runs the
  // curves come from the cells so far.
  const rhoFromFile = !running;
  const rho = rhoFromFile
    ? await readRhoFile(dir)
    : { curves: toCurves(read.cells), taskCurves: toTaskCurves(read.cells, taskSets) };
  const epsDelta = running ? undefined : await readRunJson(join(dir, 'eps-delta.json'), epsDeltaSchema, { optional: true });
  let plannedCells: number | undefined;
  try {
    // A shard plans only its slice of the grid.
    const shard = (manifest as { shard?: Shard }).shard ?? WHOLE;
    plannedCells = shardCells(expandCells(manifest.config as unknown as Manifest['config']), shard).length;
  } catch {
    plannedCells = undefined; // a manifest from an older config shape: the count is only a courtesy
  }
  return { dir, manifest, cells: read.cells, tornLine: read.tornLine, rho, rhoFromFile, epsDelta, plannedCells };
}

/** Text for HTML content and attribute values. */
export function escapeHtml(text: unknown): string {
  return String(text ?? '').replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch] as string);
}

const fmt = (v: number | null | undefined, digits = 3) => (v === null || v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(digits));

function rhoCell(p: Pick<CurvePoint, 'rhoMean' | 'rhoLow' | 'rhoHigh' | 'n'> & { status: string }): string {
  if (p.status === 'not-applicable') return '<td class="na">n/a</td>';
  if (p.status === 'incomplete') return '<td class="na">…</td>';
  if (p.rhoMean === null) return '<td class="failed">FAILED</td>';
  const interval = p.n > 1 ? `<span class="ci">[${fmt(Math.max(0, p.rhoLow ?? p.rhoMean))}, ${fmt(p.rhoHigh)}]</span>` : '';
  return `<td class="num" title="${p.n} seed(s)">${fmt(p.rhoMean)}${interval}</td>`;
}

function table(head: string[], rows: string[][], numericFrom = Infinity): string {
  const th = head.map((h, i) => `<th${i >= numericFrom ? ' class="num"' : ''}>${escapeHtml(h)}</th>`).join('');
  return `<table><thead><tr>${th}</tr></thead><tbody>${rows.map((r) => `<tr>${r.join('')}</tr>`).join('\n')}</tbody></table>`;
}

const td = (v: unknown, cls = '') => `<td${cls ? ` class="${cls}"` : ''}>${escapeHtml(v)}</td>`;

/** The summary: a row per curve (target × attack × side, × student when several), ρ [95% interval] per budget. */
function summaryTable(rho: RhoFile): string {
  const { curves } = rho;
  if (!curves.length) return '<p>No cell has finished yet.</p>';
  const budgets = [...new Set(curves.flatMap((c) => c.points.map((p) => p.budget)))].sort((a, b) => a - b);
  const showStudent = new Set(curves.map((c) => c.student)).size > 1;
  const head = ['target', 'target acc.', 'attack', 'side', ...(showStudent ? ['student'] : []), ...budgets.map((b) => `ρ @ ${b}`)];
  const rows = curves.map((c) => [
    td(c.target),
    td(fmt(c.targetAccuracy), 'num'),
    td(c.attack),
    td(c.side),
    ...(showStudent ? [td(c.student)] : []),
    ...budgets.map((b) => {
      const p = c.points.find((q) => q.budget === b);
      return p ? rhoCell(p) : '<td></td>';
    }),
  ]);
  let html = table(head, rows, head.length - budgets.length);
  const taskCurves = rho.taskCurves ?? [];
  if (taskCurves.length) {
    const tb = [...new Set(taskCurves.flatMap((c) => c.points.map((p) => p.budget)))].sort((a, b) => a - b);
    const tRows = taskCurves.map((c) => [
      td(c.target),
      td(c.points[0]?.tasks ?? ''),
      td(fmt(c.targetAccuracyMean), 'num'),
      td(c.attack),
      td(c.side),
      td(c.student),
      ...tb.map((b) => {
        const p = c.points.find((q: TaskCurvePoint) => q.budget === b);
        return p ? rhoCell(p) : '<td></td>';
      }),
    ]);
    html += `<h3>Averaged over sampled tasks (E<sub>tasks</sub> ρ per seed, then over seeds)</h3>`;
    html += table(['task set', 'tasks', 'mean target acc.', 'attack', 'side', 'student', ...tb.map((b) => `ρ @ ${b}`)], tRows, 6);
  }
  return html;
}

/** (ε, δ): a row per curve point, δ̂ [interval] per ε. */
function epsDeltaTable(eps: EpsDeltaFile): string {
  if (!eps.rows.length) return '<p>No curve point has a ρ, so there is no (ε, δ) estimate.</p>';
  const epsilons = [...new Set(eps.rows.map((r) => r.epsilon))].sort((a, b) => a - b);
  const groups = new Map<string, EpsDeltaFile['rows']>();
  for (const r of eps.rows) {
    const key = [r.target, r.attack, r.side, r.student, r.budget].join('|');
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const rows = [...groups.values()].map((g) => {
    const r = g[0];
    return [
      td(r.target),
      td(r.attack),
      td(r.side),
      td(r.student),
      td(r.budget, 'num'),
      td(r.trials, 'num'),
      ...epsilons.map((e) => {
        const x = g.find((q) => q.epsilon === e);
        return x ? `<td class="num">${fmt(x.deltaHat, 2)}<span class="ci">[${fmt(x.deltaLow, 2)}, ${fmt(x.deltaHigh, 2)}]</span></td>` : '<td></td>';
      }),
    ];
  });
  const note = `<p>δ̂ = fraction of seeds whose imitation came within ε (ρ ≤ ε); ${escapeHtml(`${Math.round((eps.level ?? 0.95) * 100)}% ${eps.interval ?? 'Clopper–Pearson'}`)} interval in brackets.</p>`;
  return note + table(['target', 'attack', 'side', 'student', 'budget', 'seeds', ...epsilons.map((e) => `ε = ${e}`)], rows, 4);
}

function failedCells(cells: CellResult[]): string {
  const failed = cells.filter((c) => c.status === 'failed');
  if (!failed.length) return `<p class="ok">No cell failed${cells.length ? ` (of ${cells.length})` : ''}.</p>`;
  const rows = failed.map((c) => [td(c.target), td(c.attack), td(c.student), td(c.side), td(c.budget, 'num'), td(c.seed, 'num'), `<td><pre>${escapeHtml(c.error ?? '(no error recorded)')}</pre></td>`]);
  return `<p>${failed.length} of ${cells.length} cells failed.</p>` + table(['target', 'attack', 'student', 'side', 'budget', 'seed', 'error'], rows);
}

function manifestSection(m: ReportManifest): string {
  const mc = m.machine ?? {};
  const gpu = m.backend.gpu
    ? `yes: the ${m.backend.name} backend ran on a GPU`
    : `no: the ${m.backend.name} backend ran on the CPU`;
  const items: [string, string][] = [
    ['Backend', m.backend.name],
    ['GPU', gpu],
    ...(m.backend.reason ? [['Backend choice', m.backend.reason] as [string, string]] : []),
    ['Started', m.startedAt],
    ['Finished', m.finishedAt ?? (m.status === 'running' ? 'not yet (still running)' : 'not recorded')],
    ['Git commit', m.gitCommit ?? 'unknown (not a git checkout)'],
    ['rhobench', m.rhobench ?? 'unknown'],
    ['Machine', [mc.hostname, mc.platform && `${mc.platform} ${mc.release ?? ''}`.trim(), mc.cpus !== undefined && `${mc.cpus} × ${mc.cpuModel ?? 'CPU'}`, mc.memoryGiB !== undefined && `${mc.memoryGiB} GiB`].filter(Boolean).join(', ') || 'unknown'],
    ['Node', mc.node ?? 'unknown'],
  ];
  if (m.cells) items.push(['Cells', `${m.cells.total} in all: ${m.cells.ok} ok, ${m.cells.notApplicable} not applicable, ${m.cells.failed} failed`]);
  const dl = `<dl>${items.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('')}</dl>`;
  const packages = Object.entries(m.packages ?? {});
  const pk = packages.length ? `<h3>Package versions</h3>` + table(['package', 'version'], packages.map(([p, v]) => [td(p), td(v ?? 'not installed')])) : '';
  const targets = m.targets?.length
    ? `<h3>Targets</h3>` + table(['target', 'family', 'test accuracy'], m.targets.map((t) => [td(t.id), td(t.family), td(fmt(t.testAccuracy), 'num')]), 2)
    : '';
  return dl + pk + targets;
}

const CSS = `
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f;max-width:1100px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.status{display:inline-block;padding:.1em .6em;border-radius:.8em;font-size:.8em;vertical-align:middle;background:#e7f5e9;color:#1b5e20}
.status.running{background:#fff4e0;color:#8a4b00}.status.interrupted{background:#fde8e8;color:#8b1a1a}
.notice{background:#fff4e0;border-left:4px solid #f0a020;padding:.6em 1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border-bottom:1px solid #e3e3e3;padding:.3em .7em;text-align:left;vertical-align:top}
th{background:#f6f6f6}.num{text-align:right;font-variant-numeric:tabular-nums}.ci{display:block;color:#777;font-size:.85em}
.na{color:#999}.failed{color:#b00020;font-weight:600}.ok{color:#1b5e20}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font-size:.85em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em}dt{font-weight:600}dd{margin:0}
figure{margin:1em 0}figure svg{width:100%;max-width:720px;height:auto}
`;

/** Inline SVG in HTML needs no namespace declarations; dropping them leaves no URL in the page. */
function inlineSvg(svg: string): string {
  return svg.replace(/\s+xmlns(:\w+)?="[^"]*"/g, '');
}

/** The whole report as one HTML page: no scripts, no external resources. */
/** The sample-query grids of the run, inlined as data: URIs so the page stays one file. */
async function sampleQueryFigures(dir: string, cells: readonly CellResult[]): Promise<string[]> {
  const seen = new Set<string>();
  const figures: string[] = [];
  for (const cell of cells) {
    const path = queryGridPath(dir, cell);
    if (seen.has(path)) continue;
    seen.add(path);
    let png: Buffer;
    try {
      png = await readFile(path);
    } catch {
      continue; // not drawn (a cell that sent no query, or a run from before samples were kept)
    }
    const caption = `${cell.target} · ${cell.attack} · ${cell.side}`;
    figures.push(
      `<figure class="queries"><img alt="${escapeHtml(`sample queries: ${caption}`)}" src="data:image/png;base64,${png.toString('base64')}"><figcaption>${escapeHtml(caption)}</figcaption></figure>`,
    );
  }
  return figures;
}

export async function buildReportHtml(runDir: string): Promise<string> {
  const run = await readRun(runDir);
  const m = run.manifest;
  const runId = m.runId || basename(run.dir);
  const plans = planPlots(run.rho);
  const unplotted = [...new Set(run.rho.curves.map((c) => c.target))].filter((t) => !plans.some((p) => p.target === t || t.startsWith(`${p.target}@`)));
  const plots = await Promise.all(
    plans.map(async (p) => `<figure id="${escapeHtml(p.name)}" data-target="${escapeHtml(p.target)}">${inlineSvg(await renderSvg(p.spec))}</figure>`),
  );
  const queryGrids = await sampleQueryFigures(run.dir, run.cells);
  const notices: string[] = [];
  if (m.status === 'running') {
    const of = run.plannedCells ? ` of ${run.plannedCells}` : '';
    notices.push(
      `This run is still in progress (or stopped without finishing: its manifest still says running). The report shows the ${run.cells.length}${of} cells finished so far, with curves computed from cells.jsonl; the (ε, δ) table is written when the run ends.`,
    );
  }
  if (m.status === 'interrupted') notices.push('This run was interrupted: cells not run are missing from the tables and plots.');
  if (run.tornLine) notices.push('The last line of cells.jsonl was cut off (the run stopped mid-write); that cell is left out.');
  const ok = run.cells.filter((c) => c.status === 'ok').length;
  const na = run.cells.filter((c) => c.status === 'not-applicable').length;
  const failed = run.cells.filter((c) => c.status === 'failed').length;
  const title = `${m.config.name} — ${runId}`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(`rhobench: ${title}`)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>${escapeHtml(title)} <span class="status ${escapeHtml(m.status)}">${escapeHtml(m.status)}</span></h1>
${m.config.description ? `<p>${escapeHtml(m.config.description)}</p>` : ''}
<p>${run.cells.length} cells: ${ok} ok, ${na} not applicable, ${failed} failed. GPU: ${m.backend.gpu ? 'yes' : 'no'} (backend ${escapeHtml(m.backend.name)}).</p>
${notices.map((n) => `<p class="notice">${escapeHtml(n)}</p>`).join('\n')}
<h2>Summary: ρ per query budget</h2>
<p>ρ = imitation privacy on the evaluation set (classification: 1 − agreement with the target). 0 is a perfect copy. Mean over seeds, 95% interval in brackets; n/a: the attack cannot run with that side information.</p>
${summaryTable(run.rho)}
<h2>Plots</h2>
${plots.length ? plots.join('\n') : '<p>Nothing to plot yet.</p>'}
${unplotted.length ? `<p>No ρ to plot for ${unplotted.map((t) => escapeHtml(t)).join(', ')}: every cell failed or was not applicable.</p>` : ''}
${queryGrids.length ? `<h2>Sample queries</h2>\n<p>The first queries each attack sent (per target and side information, from the first cell that ran), with the class the API returned and its probability when it disclosed one.</p>\n${queryGrids.join('\n')}` : ''}
<h2>(ε, δ) imitation privacy</h2>
${run.epsDelta ? epsDeltaTable(run.epsDelta) : `<p>${m.status === 'running' ? 'Written when the run ends.' : 'No eps-delta.json in this run folder.'}</p>`}
<h2>Failed cells</h2>
${failedCells(run.cells)}
<h2>Run</h2>
${manifestSection(m)}
</body>
</html>
`;
}

/** Writes <runDir>/report.html; returns its path. */
export async function writeReport(runDir: string): Promise<string> {
  const html = await buildReportHtml(runDir);
  const path = join(resolve(runDir), 'report.html');
  await writeAtomic(path, html);
  return path;
}
