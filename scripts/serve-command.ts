import { Command, InvalidArgumentError, Option } from 'commander';
import { BACKEND_NAMES } from '../bench/config.ts';
import { initBackend, type BackendName } from '../models/backend.ts';
import { loadServeConfig } from '../serve/config.ts';
import { startServer } from '../serve/server.ts';

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

/** Runs until SIGINT or SIGTERM, then closes gracefully: requests in flight finish and the ledger is flushed. */
async function serve(flags: ServeFlags): Promise<number> {
  const config = await loadServeConfig(flags.config);
  const backend = await initBackend(flags.backend);
  console.error(`backend: ${backend.name}${backend.gpu ? ' (GPU)' : ''}`);
  const server = await startServer(config, { port: flags.port, log: (m) => console.error(m) });
  console.log(`rhobench serve: listening on ${server.url} (${config.targets.map((t) => t.id).join(', ')}; ledger ${config.ledger})`);
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
    .description('serve targets behind a local HTTP prediction API with API keys, budgets and rate limits')
    .requiredOption('--config <file>', 'serve config JSON (see serve/example.json)')
    .option('-p, --port <n>', 'port to listen on, 0 = any free one (overrides the config)', port)
    .addOption(new Option('-b, --backend <name>', 'tfjs backend').choices([...BACKEND_NAMES]).default('auto'))
    .action(async (flags: ServeFlags) => {
      process.exitCode = await serve(flags);
    });
}
