import type { CellResult } from './types.ts';

/** A published figure a preset reproduces: which cell it corresponds to, and its value. */
export interface Reference {
  target: string;
  attack: string;
  side: string;
  budget: number;
  /** Needed only when the sweep has several students. */
  student?: string;
  /** studentAccuracy and agreement are fractions (0.992, not 99.2 %); queries is the count spent. */
  metric: 'studentAccuracy' | 'agreement' | 'rho' | 'queries';
  value: number;
  /** Paper and table or figure, e.g. "Orekondy et al., ICLR 2020, Table 1". */
  source: string;
  /** Where our settings differ from the paper's. */
  note?: string;
}

export interface ReferenceRow extends Reference {
  /** Mean over the seeds' ok cells; null when none finished. */
  ours: number | null;
  seeds: number;
}

/** Our figure beside each reference: the mean of the matching cells' metric over seeds. */
export function compareReferences(references: Reference[], results: CellResult[]): ReferenceRow[] {
  return references.map((ref) => {
    const cells = results.filter(
      (r) => r.status === 'ok' && r.target === ref.target && r.attack === ref.attack && r.side === ref.side && r.budget === ref.budget && (ref.student === undefined || r.student === ref.student),
    );
    const values = cells.map((c) => c[ref.metric]).filter((v): v is number => typeof v === 'number');
    return { ...ref, ours: values.length ? values.reduce((a, b) => a + b, 0) / values.length : null, seeds: values.length };
  });
}

const show = (metric: Reference['metric'], v: number | null) => (v === null ? '—' : metric === 'queries' ? String(Math.round(v)) : metric === 'rho' ? v.toFixed(3) : `${(v * 100).toFixed(1)}%`);

/** A plain table: each reference, the paper's figure and ours. */
export function formatReferences(rows: ReferenceRow[]): string {
  const head = ['target', 'attack', 'side', 'budget', 'metric', 'paper', 'ours', 'source'];
  const body = rows.map((r) => [r.target, r.attack, r.side, String(r.budget), r.metric, show(r.metric, r.value), show(r.metric, r.ours), r.source]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  const notes = rows.filter((r) => r.note).map((r) => `  ${r.target}/${r.attack}: ${r.note}`);
  return [line(head), widths.map((w) => '─'.repeat(w)).join('  '), ...body.map(line), ...(notes.length ? ['', 'where we differ from the paper:', ...notes] : [])].join('\n');
}
