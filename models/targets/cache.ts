import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Bump when what a cache entry holds changes: older entries are then ignored, never misread. */
export const CACHE_FORMAT = 2;

export function cacheKey(spec: unknown, dataFingerprint: string): string {
  return createHash('sha256').update(JSON.stringify({ format: CACHE_FORMAT, spec, data: dataFingerprint })).digest('hex');
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

interface EntryMeta<M> {
  format: number;
  meta: M;
  files: Record<string, { bytes: number; sha256: string }>;
}

/**
 * Reads a cache entry, or undefined if it is missing, from an older format, or damaged in any
 * way (every file's length and hash are checked): a bad entry is retrained, never trusted.
 */
export async function readEntry<M>(dir: string): Promise<{ meta: M; files: Record<string, Uint8Array> } | undefined> {
  try {
    const index = JSON.parse(await readFile(join(dir, 'entry.json'), 'utf8')) as EntryMeta<M>;
    if (index.format !== CACHE_FORMAT) return undefined;
    const files: Record<string, Uint8Array> = {};
    for (const [name, want] of Object.entries(index.files)) {
      const bytes = await readFile(join(dir, name));
      if (bytes.length !== want.bytes || sha(bytes) !== want.sha256) return undefined;
      files[name] = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    }
    return { meta: index.meta, files };
  } catch {
    return undefined;
  }
}

/** Writes into a temporary folder, then renames it into place: readers see a whole entry or none. */
export async function writeEntry<M>(dir: string, meta: M, files: Record<string, Uint8Array>): Promise<void> {
  const tmp = `${dir}.${process.pid}.${Date.now()}.tmp`;
  await mkdir(tmp, { recursive: true });
  const index: EntryMeta<M> = { format: CACHE_FORMAT, meta, files: {} };
  for (const [name, bytes] of Object.entries(files)) {
    await writeFile(join(tmp, name), bytes);
    index.files[name] = { bytes: bytes.length, sha256: sha(bytes) };
  }
  await writeFile(join(tmp, 'entry.json'), JSON.stringify(index));
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, '..'), { recursive: true });
  await rename(tmp, dir);
}

export function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Copies, so the result is aligned whatever the source buffer's offset. */
export function bytesF32(b: Uint8Array): Float32Array {
  return new Float32Array(b.slice().buffer);
}
