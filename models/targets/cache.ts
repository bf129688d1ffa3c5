import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Bump when what a cache entry holds changes: older entries are then ignored, never misread. */
export const CACHE_FORMAT = 3;

const sha = (data: Uint8Array | string) => createHash('sha256').update(data).digest('hex');

/** JSON with object keys sorted, so two equal specs written in a different key order hash alike. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/** sha256 of the spec, the training rows' fingerprint and the cache format. */
export function cacheKey(spec: unknown, dataFingerprint: string): string {
  return sha(canonicalJson({ format: CACHE_FORMAT, spec, data: dataFingerprint }));
}

interface EntryIndex<M> {
  format: number;
  meta: M;
  files: Record<string, { bytes: number; sha256: string }>;
  /** sha256 of canonicalJson({ format, meta, files }): entry.json vouches for itself too. */
  check: string;
}

const indexCheck = <M>(i: Omit<EntryIndex<M>, 'check'>) => sha(canonicalJson({ format: i.format, meta: i.meta, files: i.files }));

export interface Entry<M> {
  meta: M;
  files: Record<string, Uint8Array>;
}

/**
 * Reads a cache entry, or undefined if it is missing, from another format, or damaged in any
 * way (entry.json's own checksum, every file's length and hash): a bad entry is retrained, never trusted.
 */
export async function readEntry<M>(dir: string): Promise<Entry<M> | undefined> {
  try {
    const index = JSON.parse(await readFile(join(dir, 'entry.json'), 'utf8')) as EntryIndex<M>;
    if (index.format !== CACHE_FORMAT || index.check !== indexCheck(index)) return undefined;
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

/**
 * Writes into a temporary folder beside dir, then renames it into place: readers see a whole
 * entry or none. When another process finished the same entry first, its copy is kept.
 */
export async function writeEntry<M>(dir: string, meta: M, files: Record<string, Uint8Array>): Promise<void> {
  const tmp = `${dir}.${process.pid}.${Date.now()}.tmp`;
  try {
    await mkdir(tmp, { recursive: true });
    const sums: EntryIndex<M>['files'] = {};
    for (const [name, bytes] of Object.entries(files)) {
      if (name === 'entry.json' || name.includes('/')) throw new Error(`cache file name "${name}" is reserved or not a plain name`);
      await writeFile(join(tmp, name), bytes);
      sums[name] = { bytes: bytes.length, sha256: sha(bytes) };
    }
    const index = { format: CACHE_FORMAT, meta, files: sums };
    await writeFile(join(tmp, 'entry.json'), JSON.stringify({ ...index, check: indexCheck(index) }));
    // A damaged entry in the way is removed; renaming onto a non-empty folder would fail.
    if (!(await readEntry(dir))) await rm(dir, { recursive: true, force: true });
    try {
      await rename(tmp, dir);
    } catch (err) {
      // Lost a race with another writer of the same key: theirs is as good as ours.
      if (!(await readEntry(dir))) throw err;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

export function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Copies, so the result is aligned whatever the source buffer's offset. */
export function bytesF32(b: Uint8Array | undefined, what: string): Float32Array {
  if (b === undefined) throw new Error(`cache entry lacks ${what}`);
  if (b.byteLength % 4) throw new Error(`cache file ${what} has ${b.byteLength} bytes, not a whole number of float32s`);
  return new Float32Array(b.slice().buffer);
}
