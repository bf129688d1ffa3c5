import { toCurves } from './aggregate.ts';
import type { CellResult } from './types.ts';

function formatRho(p: { rhoMean: number | null; rhoLow: number | null; rhoHigh: number | null; n: number; status: string }): string {
  if (p.status === 'not-applicable') return 'n/a';
  if (p.rhoMean === null) return 'FAILED';
  const mean = p.rhoMean.toFixed(3);
  return p.n > 1 && p.rhoHigh !== null ? `${mean}±${(p.rhoHigh - p.rhoMean).toFixed(3)}` : mean;
}

/**
 * target × attack × side (× student) rows, one ρ column per budget: ρ = 0 is a perfect copy,
 * ρ near 1 a model that stayed private. "n/a": the attack cannot run with that side information.
 */
export function formatSummary(results: CellResult[]): string {
  const curves = toCurves(results);
  if (curves.length === 0) return '(no cells finished)';
  const budgets = [...new Set(results.map((r) => r.budget))].sort((a, b) => a - b);
  const showStudent = new Set(curves.map((c) => c.student)).size > 1;
  const head = ['target', 'acc', 'attack', 'side', ...(showStudent ? ['student'] : []), ...budgets.map((b) => `ρ@${b}`)];
  const rows = curves.map((c) => [
    c.target,
    c.targetAccuracy.toFixed(3),
    c.attack,
    c.side,
    ...(showStudent ? [c.student] : []),
    ...budgets.map((b) => {
      const p = c.points.find((q) => q.budget === b);
      return p ? formatRho(p) : '';
    }),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const numeric = (i: number) => i === 1 || i >= head.length - budgets.length;
  const line = (cells: string[]) =>
    cells.map((cell, i) => (numeric(i) ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
