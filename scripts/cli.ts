import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ATTACKS } from '../attacks/index.ts';
import { BACKEND_NAMES, ConfigError, loadSweepConfig, TRANSPORTS, type SweepConfig } from '../bench/config.ts';
import { REPO_ROOT } from '../bench/manifest.ts';
import { createProgress } from '../bench/progress.ts';
import { SweepRun } from '../bench/runner.ts';
import { compareReferences, formatReferences } from '../bench/reference.ts';
import { formatSummary } from '../bench/table.ts';
import { writePlots } from '../bench/plots.ts';
import { writeReport } from '../bench/report.ts';
import { compareRunDirs, comparisonExitCode, DEFAULT_COMPARE_OPTIONS, formatComparison, IncomparableRunsError, RunFolderError, type Direction } from '../bench/compare.ts';
import { formatTaskCurves, toEpsDelta, toTaskCurves } from '../bench/aggregate.ts';
import { formatEpsDelta } from '../bench/privacy.ts';
import { EXPERIMENTS } from '../bench/experiments/index.ts';
import { isExperimentConfig, loadExperimentConfig, runExperiment } from '../bench/experiments/run.ts';
import { DATASETS, DatasetError, POOL_KINDS } from '../datasets/index.ts';
import { BackendUnavailable, type BackendName } from '../models/backend.ts';
import { TARGET_FAMILIES } from '../models/targets/index.ts';
import { registerServeCommand } from './serve-command.ts';
import { STUDENT_ARCHS } from '../models/types.ts';

const PRESETS_DIR = join(REPO_ROOT, 'bench', 'presets');

/** Exit codes: 0 every cell ran (n/a counts as ran), 1 some cell failed, 2 bad input, 130 interrupted. */
const EXIT = { ok: 0, cellsFailed: 1, badInput: 2, interrupted: 130 } as const;

function presetNames(): string[] {
  return readdirSync(PRESETS_DIR)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5))
    .sort();
}

/** A config argument is a path, or the name of a preset under bench/presets/. */
function resolveConfigPath(arg: string): string {
  if (existsSync(arg)) return arg;
  const preset = join(PRESETS_DIR, `${arg}.json`);
  if (existsSync(preset)) return preset;
  throw new ConfigError(`no config file "${arg}" and no preset of that name (presets: ${presetNames().join(', ')})`);
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}

function intList(value: string): number[] {
  const items = value.split(',').map((s) => Number(s.trim()));
  if (!items.length || items.some((n) => !Number.isInteger(n) || n < 0)) {
    throw new InvalidArgumentError(`expected comma-separated non-negative integers, got "${value}"`);
  }
  return items;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got "${value}"`);
  return n;
}

interface SweepFlags {
  backend?: BackendName;
  results?: string;
  runId?: string;
  seeds?: number[];
  budgets?: number[];
  concurrency?: number;
  transport?: SweepConfig['transport'];
}

/** Presets that name an experiment (learning services) run it instead of a targets × attacks grid. */
async function experiment(path: string, flags: SweepFlags): Promise<number> {
  const unused = (['budgets', 'backend', 'concurrency', 'transport'] as const).filter((f) => flags[f] !== undefined);
  if (unused.length) throw new ConfigError(`${path} runs an experiment; --${unused.join(', --')} apply to sweeps only`);
  const config = await loadExperimentConfig(path, { seeds: flags.seeds });
  const log = (line: string) => console.error(`[${config.name}] ${line}`);
  log(`${config.experiment.name}: ${config.experiment.description}`);
  let result;
  try {
    result = await runExperiment(config, { resultsDir: flags.results ?? join(REPO_ROOT, 'results'), runId: flags.runId, log });
  } catch (err) {
    console.error(`rhobench: experiment ${config.experiment.name} failed: ${(err as Error)?.stack ?? err}`);
    return EXIT.cellsFailed;
  }
  console.log(`\n${config.name}\n${result.summary.join('\n')}`);
  console.log(`\nresults: ${result.dir}`);
  return EXIT.ok;
}

async function sweep(configArg: string, flags: SweepFlags): Promise<number> {
  const path = resolveConfigPath(configArg);
  if (isExperimentConfig(readJson(path))) return experiment(path, flags);
  const loaded = await loadSweepConfig(path);
  const config: SweepConfig = {
    ...loaded,
    ...(flags.seeds ? { seeds: flags.seeds } : {}),
    ...(flags.budgets ? { budgets: flags.budgets } : {}),
    ...(flags.concurrency ? { concurrency: flags.concurrency } : {}),
    ...(flags.transport ? { transport: flags.transport } : {}),
  };
  const progress = createProgress();
  const run = await SweepRun.start(config, {
    backend: flags.backend,
    resultsDir: flags.results,
    runId: flags.runId,
    progress,
  });
  // An interrupt keeps every finished cell: they are already in cells.jsonl, and the aggregates
  // and manifest are written from them before exiting.
  let interrupted = false;
  const onSignal = (signal: string) => {
    if (interrupted) process.exit(EXIT.interrupted);
    interrupted = true;
    progress.log(`${signal}: stopping; writing what has finished to ${run.files.dir}`);
    run
      .finish('interrupted')
      .catch((err) => progress.log(`could not write results: ${err}`))
      .finally(() => process.exit(EXIT.interrupted));
  };
  process.once('SIGINT', () => onSignal('SIGINT'));
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  const results = await run.runAll();
  if (interrupted) return new Promise(() => {}); // the signal handler exits
  await run.finish('finished');
  console.log(`\n${config.name}: ρ = 1 − agreement with the target on ${config.dataset.evalSize} unseen ${config.dataset.name === "mnist" ? "MNIST" : "Fashion-MNIST"} test images`);
  console.log(`backend ${run.env.backend.name}${run.env.backend.gpu ? ' (GPU)' : ''}\n`);
  console.log(formatSummary(results));
  if (config.taskSets.length) {
    console.log(`\naveraged over sampled tasks (ρ per seed = mean over tasks; ± = 95% t over seeds):\n${formatTaskCurves(toTaskCurves(results, config.taskSets))}`);
  }
  if (config.seeds.length > 1) {
    console.log(
      `\n(ε, δ): δ̂ = P(ρ ≤ ε) over ${config.seeds.length} seeds [95% Clopper–Pearson]; eps-delta.csv has every row:\n` +
        formatEpsDelta(toEpsDelta(results, config.taskSets, config.epsilons)),
    );
  }
  if (config.reference?.length) console.log(`\nbeside the published figures:\n${formatReferences(compareReferences(config.reference, results))}`);
  const failed = results.filter((r) => r.status === 'failed');
  console.log(`\nresults: ${run.files.dir}`);
  if (failed.length) {
    console.error(`${failed.length} of ${results.length} cells failed; their errors are in cells.jsonl`);
    return EXIT.cellsFailed;
  }
  return EXIT.ok;
}

const LISTS: Record<string, () => string[]> = {
  datasets: () => [...DATASETS],
  pools: () => [...POOL_KINDS, '{"path": "<IDX file or image folder>"}'],
  targets: () => [...TARGET_FAMILIES],
  attacks: () => Object.keys(ATTACKS),
  students: () => [...STUDENT_ARCHS],
  disclosures: () => ['label', 'topK (e.g. top3)', 'probs', 'roundedN (e.g. rounded2)', 'leaf (tree targets)'],
  tasks: () => ['digits', 'parity', 'ge5', 'one-vs-rest-D (D a digit)', 'subset-DDD (e.g. subset-0137)'],
  backends: () => [...BACKEND_NAMES],
  experiments: () => Object.keys(EXPERIMENTS),
  presets: presetNames,
};

function list(what?: string): number {
  if (what && !LISTS[what]) {
    console.error(`unknown list "${what}": choose one of ${Object.keys(LISTS).join(', ')}`);
    return EXIT.badInput;
  }
  for (const [name, items] of Object.entries(LISTS)) {
    if (what && name !== what) continue;
    if (what === 'experiments') console.log(Object.values(EXPERIMENTS).map((e) => `${e.name}\n  ${e.description}`).join('\n'));
    else console.log(what ? items().join('\n') : `${name}: ${items().join(', ')}`);
  }
  return EXIT.ok;
}

const program = new Command()
  .name('rhobench')
  .description('Imitation-privacy benchmark: how well can an attacker copy a model it can only query?')
  .showHelpAfterError();

program
  .command('sweep')
  .description('run a sweep config (a path, or a preset name from `rhobench list presets`)')
  .argument('<config>', 'sweep config JSON file or preset name')
  .addOption(new Option('-b, --backend <name>', 'tfjs backend (overrides the config)').choices([...BACKEND_NAMES]))
  .option('-r, --results <dir>', 'folder for run folders', join(REPO_ROOT, 'results'))
  .option('--run-id <id>', 'name of the run folder (default <config name>-<timestamp>)')
  .option('--seeds <list>', 'override the seeds, e.g. 1,2,3', intList)
  .option('--budgets <list>', 'override the query budgets, e.g. 100,1000', intList)
  .option('-c, --concurrency <n>', 'cells in flight at once (overrides the config)', positiveInt)
  .addOption(new Option('-t, --transport <name>', 'how attacks reach the targets (overrides the config)').choices([...TRANSPORTS]))
  .action(async (config: string, flags: SweepFlags) => {
    process.exitCode = await sweep(config, flags);
  });

program
  .command('list')
  .description(`list what a config can name: ${Object.keys(LISTS).join(', ')}`)
  .argument('[what]', 'one list only')
  .action((what?: string) => {
    process.exitCode = list(what);
  });

function nonNegative(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`expected a number ≥ 0, got "${value}"`);
  return n;
}

interface CompareFlags {
  rhoTolerance: number;
  speedTolerance: number;
  speedFloor: number;
  direction: Direction;
  force?: boolean;
  failOnMissing?: boolean;
}

program
  .command('compare')
  .description('compare two sweep runs curve by curve; exits 1 when ρ or speed regressed beyond the tolerances (a nightly gate)')
  .argument('<base>', 'run folder to compare against (e.g. last night\'s)')
  .argument('<new>', 'run folder under test')
  .option('--rho-tolerance <x>', 'largest change of mean ρ that counts as the same', nonNegative, DEFAULT_COMPARE_OPTIONS.rhoTolerance)
  .option('--speed-tolerance <x>', 'largest relative slowdown per cell that counts as the same (0.5 = 50% slower)', nonNegative, DEFAULT_COMPARE_OPTIONS.speedTolerance)
  .option('--speed-floor <s>', 'a slowdown must also exceed this many seconds per cell', nonNegative, DEFAULT_COMPARE_OPTIONS.speedFloorSeconds)
  .addOption(new Option('--direction <d>', 'attack: ρ going up is a regression (the attacks are under test); defense: ρ going down is').choices(['attack', 'defense']).default('attack'))
  .option('--force', 'compare runs whose configs differ in data or definitions (differences become warnings)')
  .option('--fail-on-missing', 'also fail when a curve point of the base run is missing from the new one')
  .action(async (base: string, next: string, flags: CompareFlags) => {
    const comparison = await compareRunDirs(base, next, {
      rhoTolerance: flags.rhoTolerance,
      speedTolerance: flags.speedTolerance,
      speedFloorSeconds: flags.speedFloor,
      direction: flags.direction,
      force: flags.force,
    });
    console.log(formatComparison(comparison.rows, comparison));
    process.exitCode = comparisonExitCode(comparison.rows, { failOnMissing: flags.failOnMissing });
  });

program
  .command('report')
  .description('write plots/ (ρ curves as SVG and PNG) and a self-contained report.html for a sweep run folder')
  .argument('<dir>', 'run folder, e.g. results/quick-<timestamp>')
  .action(async (dir: string) => {
    const plots = await writePlots(dir);
    const report = await writeReport(dir);
    console.log(`${plots.length} plot files in ${join(dir, 'plots')}\nreport: ${report}`);
  });

registerServeCommand(program);

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof ConfigError || err instanceof BackendUnavailable || err instanceof DatasetError || err instanceof RunFolderError || err instanceof IncomparableRunsError) {
    console.error(`rhobench: ${err.message}`);
    process.exitCode = EXIT.badInput;
  } else {
    console.error('rhobench: unexpected error:', err);
    process.exitCode = EXIT.cellsFailed;
  }
}

