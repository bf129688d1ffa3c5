import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { SideInfo } from '../attacks/types.ts';
import type { Target } from '../models/types.ts';
import type { ServeConfig } from '../serve/config.ts';
import { HttpOracle } from '../serve/http-oracle.ts';
import { hashKey, type ApiKey } from '../serve/keys.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import { startServer, type RunningServer } from '../serve/server.ts';
import type { Oracle } from '../serve/types.ts';
import type { SweepConfig } from './config.ts';

/** How cells reach their targets: directly, or through a real HTTP API the harness runs on loopback. */
export interface Transport {
  name: SweepConfig['transport'];
  oracle(target: Target, side: SideInfo, budget: number): Oracle;
  close(): Promise<void>;
}

export const inProcess: Transport = {
  name: 'inprocess',
  oracle: (target, side, budget) => new InProcessOracle(target, budget, side.disclosure),
  close: async () => {},
};

const account = (target: string, side: string) => `${target}/${side}`;

/**
 * Serves the sweep's targets with one API account per (target, side-information level): the
 * server applies that level's disclosure, each cell's oracle holds the cell's budget. Keys are
 * fresh random secrets for this run; the ledger lands in the run folder.
 */
export async function httpTransport(config: SweepConfig, opts: { runDir: string; cacheDir: string; log?(m: string): void }): Promise<Transport> {
  const secrets = new Map<string, string>();
  const keys: ApiKey[] = [];
  for (const t of config.targets) {
    for (const side of config.side) {
      const name = account(t.id, side.name);
      const secret = randomBytes(24).toString('base64url');
      secrets.set(name, secret);
      keys.push({
        name,
        sha256: hashKey(secret),
        disclosure: side.disclosure,
        budget: Number.MAX_SAFE_INTEGER,
        rateLimit: { requestsPerSecond: 1e6, burst: 1e6 },
        models: [t.id],
      });
    }
  }
  const serveConfig: ServeConfig = {
    port: 0,
    host: '127.0.0.1',
    dataset: config.dataset,
    targets: config.targets,
    keys,
    ledger: join(opts.runDir, 'serve-ledger.jsonl'),
    maxRowsPerRequest: 1024,
    maxBodyBytes: 16 * 2 ** 20,
  };
  const server: RunningServer = await startServer(serveConfig, { cacheDir: opts.cacheDir, log: opts.log });
  opts.log?.(`serving targets at ${server.url} for the attacks`);
  return {
    name: 'http',
    oracle(target, side, budget) {
      const key = secrets.get(account(target.id, side.name));
      if (!key) throw new Error(`no API account for target ${target.id} and side ${side.name}`);
      return new HttpOracle({
        url: server.url,
        model: target.id,
        key,
        budget,
        disclosure: side.disclosure,
        classes: target.classes,
        inputShape: target.inputShape,
      });
    },
    close: () => server.close(),
  };
}
