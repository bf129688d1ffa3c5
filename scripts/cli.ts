import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ATTACKS } from '../attacks/index.ts';
import { BACKEND_NAMES, ConfigError, loadSweepConfig, TRANSPORTS, type SweepConfig } from '../bench/config.ts';
import { REPO_ROOT } from '../bench/manifest.ts';
import { createJsonProgress, createProgress, type Progress } from '../bench/progress.ts';
import { configForResume, readRunFolder, SweepRun } from '../bench/runner.ts';
import { describeMissing, mergeRuns, MergeError } from '../bench/merge.ts';
import { formatShard, parseShard, ShardError } from '../bench/shard.ts';
import { compareReferences, formatReferences } from '../bench/reference.ts';
import { formatSummary } from '../bench/table.ts';
import { writePlots } from '../bench/plots.ts';
import { writeReport } from '../bench/report.ts';
import { compareRunDirs, comparisonExitCode, DEFAULT_COMPARE_OPTIONS, formatComparison, IncomparableRunsError, RunFolderError, type Direction } from '../bench/compare.ts';
import { formatTaskCurves, toEpsDelta, toTaskCurves } from '../bench/aggregate.ts';
import { formatEpsDelta } from '../bench/privacy.ts';
import { EXPERIMENTS } from '../bench/experiments/index.ts';
import { isExperimentConfig, parseExperimentConfig, runExperiment } from '../bench/experiments/run.ts';
import { DATASETS, DatasetError, POOL_KINDS } from '../datasets/index.ts';
import { BackendUnavailable, type BackendName } from '../engine/backend.ts';
import { TARGET_FAMILIES } from '../models/targets/index.ts';
import { registerServeCommand } from './serve-command.ts';
import { STUDENT_ARCHS } from '../models/types.ts';

const PRESETS_DIR = join(REPO_ROOT, 'bench', 'presets');

/**
 * Exit codes: 0 every cell ran (n/a counts as ran), 1 some cell failed, 2 bad input (merge: shards
 * that do not fit together), 3 merge: shards or cells missing (without --allow-partial), 130 interrupted.
 */
const EXIT = { ok: 0, cellsFailed: 1, badInput: 2, incomplete: 3, interrupted: 130 } as const;

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

const autoOrCount = (max: number) => (value: string): number | 'auto' => {
  if (value === 'auto') return 'auto';
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`expected "auto" or a whole number from 1 to ${max}, got "${value}"`);
  return n;
};
const concurrencyValue = autoOrCount(64);
const cellsPerThreadValue = autoOrCount(16);

interface SweepFlags {
  backend?: BackendName;
  results: string;
  runId?: string;
  seeds?: number[];
  budgets?: number[];
  concurrency?: SweepConfig['concurrency'];
  cellsPerThread?: SweepConfig['cellsPerThread'];
  transport?: SweepConfig['transport'];
  /** A run folder, or true (bare --resume): the --results/--run-id folder, started when it holds no run yet. */
  resume?: string | true;
  shard?: string;
  json?: boolean;
}

/**
 * Presets that name an experiment (learning services) run it instead of a targets × attacks grid.
 * Experiments compute in float64 JavaScript without tfjs (test/experiments.test.ts checks their
 * imports), so --backend and --concurrency are accepted and unused: a nightly job can pass the
 * same flags to every preset.
 */
async function experiment(path: string, json: unknown, flags: SweepFlags): Promise<number> {
  const unused = (['budgets', 'transport', 'resume', 'shard', 'json'] as const).filter((f) => flags[f] !== undefined);
  if (unused.length) throw new ConfigError(`${path} runs an experiment; --${unused.join(', --')} apply to sweeps only`);
  const config = parseExperimentConfig(json, basename(path), { seeds: flags.seeds });
  const log = (line: string) => console.error(`[${config.name}] ${line}`);
  log(`${config.experiment.name}: ${config.experiment.description}`);
  const ignored = [
    flags.backend && `--backend ${flags.backend}`,
    flags.concurrency !== undefined && `--concurrency ${flags.concurrency}`,
    flags.cellsPerThread !== undefined && `--cells-per-thread ${flags.cellsPerThread}`,
  ].filter(Boolean);
  if (ignored.length) log(`${ignored.join(' and ')} not used: experiments compute in float64 JavaScript, without tfjs`);
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

/**
 * A new run, or the continuation of one. `--resume DIR` must find a run there; a bare `--resume`
 * (job scripts: the same command for the first attempt and every requeue) continues the
 * --results/--run-id folder when it holds a run and starts it otherwise.
 */
async function openRun(given: SweepConfig | undefined, flags: SweepFlags, progress: Progress): Promise<SweepRun> {
  const shard = flags.shard === undefined ? undefined : parseShard(flags.shard);
  const common = { backend: flags.backend, resultsDir: flags.results, progress, ...(shard ? { shard } : {}) };
  const needConfig = (why: string) => {
    if (!given) throw new ConfigError(`a config (a path or a preset name) is needed ${why}`);
    return given;
  };
  if (flags.resume === undefined) return SweepRun.start(needConfig('to start a run'), { ...common, runId: flags.runId });
  if (typeof flags.resume === 'string' && flags.runId) throw new ConfigError('--resume DIR names the run folder already; leave out --run-id (or give a bare --resume with --run-id)');
  if (flags.resume === true && !flags.runId) throw new ConfigError('a bare --resume continues the --run-id folder: give --run-id too, or --resume results/<run-id>');
  const dir = typeof flags.resume === 'string' ? flags.resume : join(flags.results, flags.runId as string);
  const folder = await readRunFolder(dir);
  if (!folder) {
    if (typeof flags.resume === 'string') throw new RunFolderError(`nothing to resume in ${dir}: it has no manifest.json (is it a run folder, results/<run-id>/?)`);
    progress.log(`no run in ${dir} yet: starting it`);
    return SweepRun.start(needConfig(`to start ${dir}`), { ...common, runId: flags.runId });
  }
  const recorded = folder.manifest.config;
  // Without a config argument, --seeds/--budgets still ask for cells: check them against the run's.
  const candidate = given ?? { ...recorded, ...(flags.seeds ? { seeds: flags.seeds } : {}), ...(flags.budgets ? { budgets: flags.budgets } : {}) };
  const runtime = {
    ...(flags.concurrency ? { concurrency: flags.concurrency } : {}),
    ...(flags.cellsPerThread ? { cellsPerThread: flags.cellsPerThread } : {}),
    ...(flags.transport ? { transport: flags.transport } : {}),
  };
  return SweepRun.resume(dir, configForResume(dir, recorded, candidate, runtime), common);
}

async function sweep(configArg: string | undefined, flags: SweepFlags): Promise<number> {
  let given: SweepConfig | undefined;
  if (configArg !== undefined) {
    const path = resolveConfigPath(configArg);
    const json = readJson(path);
    if (isExperimentConfig(json)) return experiment(path, json, flags);
    const loaded = await loadSweepConfig(path);
    given = {
      ...loaded,
      ...(flags.seeds ? { seeds: flags.seeds } : {}),
      ...(flags.budgets ? { budgets: flags.budgets } : {}),
      ...(flags.concurrency ? { concurrency: flags.concurrency } : {}),
      ...(flags.cellsPerThread ? { cellsPerThread: flags.cellsPerThread } : {}),
      ...(flags.transport ? { transport: flags.transport } : {}),
    };
  }
  // With --json, stdout carries the events only (one JSON object a line); the summary goes to stderr.
  const progress = flags.json ? createJsonProgress(process.stdout) : createProgress();
  const say = flags.json ? (text: string) => console.error(text) : (text: string) => console.log(text);
  const run = await openRun(given, flags, progress);
  const config = run.config;
  // An interrupt keeps every finished cell: they are already in cells.jsonl, and the aggregates
  // and manifest are written from them before exiting (--resume continues from there).
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
  await run.runAll();
  if (interrupted) return new Promise(() => {}); // the signal handler exits
  await run.finish('finished');
  const results = run.results;
  say(`\n${config.name}: ρ = 1 − agreement with the target on ${config.dataset.evalSize} unseen ${config.dataset.name === "mnist" ? "MNIST" : "Fashion-MNIST"} test images`);
  say(`backend ${run.backend.name}${run.backend.gpu ? ' (GPU)' : ''}${run.shard.count > 1 ? ` · shard ${formatShard(run.shard)} (${run.cells.length} cells; merge the shards with rhobench merge)` : ''}\n`);
  say(formatSummary(results));
  if (config.taskSets.length) {
    say(`\naveraged over sampled tasks (ρ per seed = mean over tasks; ± = 95% t over seeds):\n${formatTaskCurves(toTaskCurves(results, config.taskSets))}`);
  }
  if (config.seeds.length > 1) {
    say(
      `\n(ε, δ): δ̂ = P(ρ ≤ ε) over ${config.seeds.length} seeds [95% Clopper–Pearson]; eps-delta.csv has every row:\n` +
        formatEpsDelta(toEpsDelta(results, config.taskSets, config.epsilons)),
    );
  }
  if (config.reference?.length) say(`\nbeside the published figures:\n${formatReferences(compareReferences(config.reference, results))}`);
  const failed = results.filter((r) => r.status === 'failed');
  say(`\nresults: ${run.files.dir}`);
  if (failed.length) {
    console.error(`${failed.length} of ${results.length} cells failed; their errors are in cells.jsonl (--resume runs them again)`);
    return EXIT.cellsFailed;
  }
  return EXIT.ok;
}

interface MergeFlags {
  allowPartial?: boolean;
}

async function merge(out: string, dirs: string[], flags: MergeFlags): Promise<number> {
  const log = (line: string) => console.error(line);
  const outcome = await mergeRuns(out, dirs, { allowPartial: flags.allowPartial, log });
  const { plan } = outcome;
  for (const w of plan.warnings) log(`warning: ${w}`);
  if (!outcome.written) {
    log(`rhobench: not merged: ${describeMissing(plan)}.\nRun the missing shards (or resume the unfinished ones with --resume), or pass --allow-partial to merge what there is.`);
    return EXIT.incomplete;
  }
  const c = outcome.manifest!.cells;
  if (plan.missingCells.length) log(`warning: partial merge (status interrupted): ${describeMissing(plan)}`);
  console.log(`merged ${plan.sources.length} of ${plan.shardCount} shard${plan.shardCount > 1 ? 's' : ''} into ${out}: ${plan.results.length} of ${plan.total} cells (${c.ok} ok, ${c.notApplicable} n/a, ${c.failed} failed)`);
  console.log(formatSummary(plan.results));
  if (c.failed) {
    console.error(`${c.failed} cells failed; their errors are in ${join(out, 'cells.jsonl')} (resume their shards to run them again, then merge again)`);
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
  .showHelpAfterError()
  // Usage errors (a bad flag value, a missing argument) are bad input: exit 2, as for configs.
  .exitOverride();

program
  .command('sweep')
  .description('run a sweep config (a path, or a preset name from `rhobench list presets`), or continue a run with --resume')
  .argument('[config]', 'sweep config JSON file or preset name (optional with --resume: the run folder\'s manifest has it)')
  .addOption(new Option('-b, --backend <name>', 'tfjs backend (overrides the config)').choices([...BACKEND_NAMES]))
  .option('-r, --results <dir>', 'folder for run folders', join(REPO_ROOT, 'results'))
  .option('--run-id <id>', 'name of the run folder (default <config name>-<timestamp>)')
  .option('--seeds <list>', 'override the seeds, e.g. 1,2,3', intList)
  .option('--budgets <list>', 'override the query budgets, e.g. 100,1000', intList)
  .option('-c, --concurrency <n>', 'threads running cells, each a worker thread of its own with its own backend: a number, or "auto" (one per core; the default when the config sets none); 1 runs cells in the main thread. Overrides the config', concurrencyValue)
  .option('--cells-per-thread <n>', 'cells each thread runs interleaved, sharing its backend: a number, or "auto" (1 on CPU backends, 8 on a GPU, where their students train stacked; the default). Overrides the config', cellsPerThreadValue)
  .addOption(new Option('-t, --transport <name>', 'how attacks reach the targets (overrides the config)').choices([...TRANSPORTS]))
  .option('--resume [dir]', 'continue the run in DIR (results/<run-id>): keep its finished cells, run failed and missing ones; bare --resume continues --run-id, or starts it when it holds no run yet')
  .option('--shard <i/n>', 'run shard i of n (0-based, 0 ≤ i < n): the grid cells whose index mod n is i; merge the shards with `rhobench merge`')
  .option('--json', 'progress as JSON lines on stdout (events start, cell-start, cell-end, log, finish); the summary goes to stderr')
  .action(async (config: string | undefined, flags: SweepFlags) => {
    process.exitCode = await sweep(config, flags);
  });

program
  .command('merge')
  .description('merge shard run folders (rhobench sweep --shard i/n) into one run folder; exits 3 when shards or cells are missing')
  .argument('<out>', 'run folder to write: a new folder, or the output of an earlier merge (replaced)')
  .argument('<dirs...>', 'the shards\' run folders')
  .option('--allow-partial', 'write the merge even when shards or cells are missing (its manifest then says interrupted)')
  .action(async (out: string, dirs: string[], flags: MergeFlags) => {
    process.exitCode = await merge(out, dirs, flags);
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
  if (err instanceof CommanderError) {
    // commander has printed the message (or the help, whose code is 0).
    process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.badInput;
  } else if (
    err instanceof ConfigError || err instanceof BackendUnavailable || err instanceof DatasetError || err instanceof RunFolderError ||
    err instanceof IncomparableRunsError || err instanceof ShardError || err instanceof MergeError
  ) {
    console.error(`rhobench: ${err.message}`);
    process.exitCode = EXIT.badInput;
  } else {
    console.error('rhobench: unexpected error:', err);
    process.exitCode = EXIT.cellsFailed;
  }
}

