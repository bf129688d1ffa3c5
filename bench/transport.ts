import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SideInfo } from '../attacks/types.ts';
import type { Target } from '../models/types.ts';
import type { ServeConfig } from '../serve/config.ts';
import { HttpOracle } from '../serve/http-oracle.ts';
import { hashKey, type ApiKey } from '../serve/keys.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import { startServer, type RunningServer } from '../serve/server.ts';
import type { Oracle } from '../serve/types.ts';
import { ConfigError, type SweepConfig } from './config.ts';
import { describeDisclosure } from '../serve/disclosure.ts';

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

export interface TransportOptions {
  /** Where a server of the harness's own keeps its ledger; default a temporary folder. */
  runDir?: string;
  cacheDir: string;
  log?(m: string): void;
}

const account = (target: string, side: string) => `${target}/${side}`;

/** A cell's oracle on an HTTP API: the key's account applies the disclosure, the oracle holds the cell's budget. */
function httpOracle(url: string, key: string, target: Target, side: SideInfo, budget: number): Oracle {
  return new HttpOracle({ url, model: target.id, key, budget, disclosure: side.disclosure, classes: target.classes, inputShape: target.inputShape });
}

/**
 * Serves the sweep's targets with one API account per (target, side-information level): the
 * server applies that level's disclosure, each cell's oracle holds the cell's budget. Keys are
 * fresh random secrets for this run; the ledger lands in the run folder.
 */
export async function httpTransport(config: SweepConfig, opts: TransportOptions): Promise<Transport> {
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
    ledger: join(opts.runDir ?? mkdtempSync(join(tmpdir(), 'rhobench-serve-')), 'serve-ledger.jsonl'),
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
      return httpOracle(server.url, key, target, side, budget);
    },
    close: () => server.close(),
  };
}

interface RemoteModel {
  id: string;
  family: string;
  inputShape: number[];
  classes: number;
}

async function getJson<T>(url: string, key: string): Promise<T> {
  let res: Response;
  try {
    res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  } catch (err) {
    throw new ConfigError(`server.url: cannot reach ${url}: ${(err as Error).message}`);
  }
  const body = (await res.json().catch(() => ({}))) as T & { error?: string };
  if (!res.ok) throw new ConfigError(`server: ${url} answered ${res.status}: ${body.error ?? res.statusText}`);
  return body;
}

/**
 * An API that is already running (e.g. \`rhobench serve\` with the same targets). Before any cell,
 * each side's key is checked against the server: it must exist, disclose exactly what the side
 * says, and reach every target with the same family, input shape and classes. ρ is scored against
 * the harness's own copy of each target, so the server must serve the config's targets.
 */
export async function remoteTransport(config: SweepConfig, targets: Map<string, Target>): Promise<Transport> {
  const server = config.server;
  if (!server) throw new ConfigError('transport "http" with an external server needs "server": { "url", "keys" }');
  const base = server.url.replace(/\/+$/, '');
  const keys = new Map<string, string>();
  for (const side of config.side) {
    const variable = server.keys[side.name];
    const key = process.env[variable];
    if (!key) throw new ConfigError(`server.keys.${side.name}: environment variable ${variable} is not set`);
    const usage = await getJson<{ disclosure: string }>(`${base}/v1/usage`, key);
    if (usage.disclosure !== describeDisclosure(side.disclosure)) {
      throw new ConfigError(`server.keys.${side.name}: the key in ${variable} discloses ${usage.disclosure}, but side "${side.name}" is ${describeDisclosure(side.disclosure)}`);
    }
    const { models } = await getJson<{ models: RemoteModel[] }>(`${base}/v1/models`, key);
    for (const t of targets.values()) {
      const m = models.find((x) => x.id === t.id);
      const same = m && m.family === t.family && m.classes === t.classes && m.inputShape.join() === t.inputShape.join();
      if (!same) throw new ConfigError(`server: the key in ${variable} does not reach a model "${t.id}" like the config's (${t.family}, [${t.inputShape}], ${t.classes} classes)`);
    }
    keys.set(side.name, key);
  }
  return {
    name: 'http',
    oracle: (target, side, budget) => httpOracle(base, keys.get(side.name) as string, target, side, budget),
    close: async () => {},
  };
}

/** The transport a sweep config asks for: in-process, a loopback server of its own, or a running API. */
export function openTransport(
  config: SweepConfig,
  targets: Map<string, Target>,
  opts: TransportOptions,
): Promise<Transport> {
  if (config.transport === 'inprocess') return Promise.resolve(inProcess);
  return config.server ? remoteTransport(config, targets) : httpTransport(config, opts);
}
