import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { BACKEND_NAMES, ConfigError } from '../bench/config.ts';
import { initBackend, type BackendName } from '../engine/backend.ts';
import { loadServeConfig } from '../serve/config.ts';
import { startServer } from '../serve/server.ts';
import { buildTrainingService, parseTrainingServeConfig } from '../serve/training-config.ts';
import { startTrainingServer } from '../serve/training-server.ts';

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65_535) throw new InvalidArgumentError(`expected a port from 0 to 65535, got "${value}"`);
  return n;
}

interface ServeFlags {
  config: string;
  port?: number;
  backend: BackendName;
}

/** A config with a `learner` describes a learning service (serve/training-example.json), not prediction targets. */
async function trainingConfigJson(path: string): Promise<unknown> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(`${path}: ${(err as Error).message}`);
  }
  return typeof json === 'object' && json !== null && 'learner' in json ? json : undefined;
}

async function startFromConfig(flags: ServeFlags): Promise<{ close(): Promise<void> }> {
  const training = await trainingConfigJson(flags.config);
  if (training) {
    const config = parseTrainingServeConfig(training, flags.config);
    const { service, server: options } = buildTrainingService(config);
    const server = await startTrainingServer(service, { ...options, port: flags.port ?? options.port, log: (m) => console.error(m) });
    const caps = await service.usage();
    console.log(
      `rhobench serve: learning service (${config.learner}, Protocol ${config.protocol}; releases ${config.releases.join(', ')}; ` +
        `caps k₁ ${caps.caps.fits} fits, k₂ ${caps.caps.rows} rows) listening on ${server.url}`,
    );
    return server;
  }
  const config = await loadServeConfig(flags.config);
  const backend = await initBackend(flags.backend);
  console.error(`backend: ${backend.name}${backend.gpu ? ' (GPU)' : ''}`);
  const server = await startServer(config, { port: flags.port, log: (m) => console.error(m) });
  console.log(`rhobench serve: listening on ${server.url} (${config.targets.map((t) => t.id).join(', ')}; ledger ${config.ledger})`);
  return server;
}

/** Runs until SIGINT or SIGTERM, then closes gracefully: requests in flight finish and the ledger is flushed. */
async function serve(flags: ServeFlags): Promise<number> {
  const server = await startFromConfig(flags);
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        console.error(`${signal} again: exiting without waiting`);
        process.exit(130);
      }
      stopping = true;
      console.error(`${signal}: finishing requests in flight and flushing the ledger…`);
      server.close().then(
        () => resolve(0),
        (err: Error) => {
          console.error(`rhobench serve: closing failed: ${err.message}`);
          resolve(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
}

/** Adds `rhobench serve --config <file> [--port N] [--backend name]`. Config errors are ConfigError (exit 2 in the CLI). */
export function registerServeCommand(program: Command): Command {
  return program
    .command('serve')
    .description('serve targets behind a local HTTP prediction API with API keys, budgets and rate limits, or a learning service (a config naming a `learner`)')
    .requiredOption('--config <file>', 'serve config JSON (see serve/example.json; a learning service: serve/training-example.json)')
    .option('-p, --port <n>', 'port to listen on, 0 = any free one (overrides the config)', port)
    .addOption(new Option('-b, --backend <name>', 'tfjs backend').choices([...BACKEND_NAMES]).default('auto'))
    .action(async (flags: ServeFlags) => {
      process.exitCode = await serve(flags);
    });
}
