import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { adapterLabel, isHardware, type AdapterInfo } from './dawn.ts';

/** Which adapter Dawn offers; without one, why (`noAdapter`: Dawn loaded and listed none). */
export type DawnProbe = { found: true; hardware: boolean; label: string } | { found: false; why: string; noAdapter?: boolean };

/** Where child processes can resolve the optional `webgpu` package from. */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const SCRIPT = `
  let out;
  try {
    const { create, globals } = await import('webgpu');
    Object.assign(globalThis, globals);
    const a = await create([]).requestAdapter({ powerPreference: 'high-performance' });
    out = a
      ? { found: true, isFallbackAdapter: a.isFallbackAdapter, info: { vendor: a.info?.vendor, architecture: a.info?.architecture, device: a.info?.device, description: a.info?.description } }
      : { found: false, noAdapter: true, why: 'Dawn found no GPU adapter' };
  } catch (err) {
    out = { found: false, why: 'the optional package "webgpu" (Dawn) did not load: ' + String(err?.message ?? err).split('\\n')[0] };
  }
  process.stdout.write('\\n' + JSON.stringify(out) + '\\n');
`;

/** Probes are shared with worker threads, which start with a copy of process.env. */
const CACHE_VAR = 'RHOBENCH_DAWN_PROBE';

/**
 * Which adapter Dawn would give, asked in a child process. Dawn writes its own warnings to the
 * process's stderr from native code (a software driver's limits, "Found no drivers!" where no
 * Vulkan driver exists), which no JavaScript can intercept; asking in a child keeps them off the
 * terminal (RHOBENCH_DAWN_LOG=1 passes them through), and keeps Dawn out of processes that will
 * not use it.
 */
export async function probeDawn(): Promise<DawnProbe> {
  const cached = process.env[CACHE_VAR];
  if (cached) return JSON.parse(cached) as DawnProbe;
  const probe = await new Promise<DawnProbe>((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', SCRIPT], { cwd: ROOT, timeout: 60_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (process.env.RHOBENCH_DAWN_LOG === '1' && stderr) process.stderr.write(stderr);
      const last = stdout.trim().split('\n').pop();
      if (!last?.startsWith('{')) {
        resolve({ found: false, why: `probing Dawn failed (${err ? err.message.split('\n')[0] : 'no answer'})` });
        return;
      }
      const raw = JSON.parse(last) as { found: boolean; why?: string; noAdapter?: boolean; isFallbackAdapter?: boolean; info?: AdapterInfo };
      resolve(raw.found ? { found: true, hardware: isHardware(raw), label: adapterLabel(raw.info ?? {}) } : { found: false, why: raw.why ?? 'Dawn found no GPU adapter', noAdapter: raw.noAdapter });
    });
  });
  process.env[CACHE_VAR] = JSON.stringify(probe);
  return probe;
}
