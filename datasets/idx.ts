import { readFile, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';

/** A dataset file or request that cannot be used; the message names the file and the problem. */
export class DatasetError extends Error {
  readonly name = 'DatasetError';
}

export type IdxData = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
export interface Idx {
  dims: number[];
  data: IdxData;
}

const TYPES: Record<number, { size: number; name: string; make: (n: number) => IdxData; get: (v: DataView, o: number) => number }> = {
  0x08: { size: 1, name: 'u8', make: (n) => new Uint8Array(n), get: (v, o) => v.getUint8(o) },
  0x09: { size: 1, name: 'i8', make: (n) => new Int8Array(n), get: (v, o) => v.getInt8(o) },
  0x0b: { size: 2, name: 'i16', make: (n) => new Int16Array(n), get: (v, o) => v.getInt16(o) },
  0x0c: { size: 4, name: 'i32', make: (n) => new Int32Array(n), get: (v, o) => v.getInt32(o) },
  0x0d: { size: 4, name: 'f32', make: (n) => new Float32Array(n), get: (v, o) => v.getFloat32(o) },
  0x0e: { size: 8, name: 'f64', make: (n) => new Float64Array(n), get: (v, o) => v.getFloat64(o) },
};

function typeCodeOf(data: IdxData): number {
  if (data instanceof Uint8Array) return 0x08;
  if (data instanceof Int8Array) return 0x09;
  if (data instanceof Int16Array) return 0x0b;
  if (data instanceof Int32Array) return 0x0c;
  if (data instanceof Float32Array) return 0x0d;
  return 0x0e;
}

/**
 * The IDX format (LeCun's MNIST files): two zero bytes, a type code, the number of dimensions,
 * each dimension as a big-endian u32, then the values big-endian. Every inconsistency is an error.
 */
export function parseIdx(bytes: Uint8Array, file: string): Idx {
  const name = basename(file);
  const fail = (what: string) => new DatasetError(`${name}: ${what} (${file})`);
  if (bytes.length < 4) throw fail(`too short for an IDX header: ${bytes.length} bytes`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw fail(`not an IDX file: magic number starts 0x${bytes[0].toString(16)}${bytes[1].toString(16)}, expected 0x0000 (a gzipped file must be unpacked first)`);
  }
  const type = TYPES[bytes[2]];
  if (!type) throw fail(`unknown IDX type code 0x${bytes[2].toString(16)}`);
  const rank = bytes[3];
  if (rank === 0) throw fail('IDX header declares 0 dimensions');
  const header = 4 + 4 * rank;
  if (bytes.length < header) throw fail(`truncated header: ${rank} dimensions need ${header} bytes, found ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i));
  if (dims.some((d) => d === 0)) throw fail(`dimension of size 0 in [${dims.join(', ')}]`);
  const count = dims.reduce((a, b) => a * b, 1);
  const expected = header + count * type.size;
  if (bytes.length < expected) throw fail(`truncated: expected ${expected} bytes for ${type.name}[${dims.join('×')}], found ${bytes.length}`);
  if (bytes.length > expected) throw fail(`${bytes.length - expected} unexpected bytes after ${type.name}[${dims.join('×')}]`);
  let data: IdxData;
  if (type.size === 1) {
    data = type.make(count);
    data.set(bytes.subarray(header, expected) as unknown as ArrayLike<number>);
  } else {
    data = type.make(count);
    for (let i = 0; i < count; i++) data[i] = type.get(view, header + i * type.size);
  }
  return { dims, data };
}

export async function readIdx(path: string): Promise<Idx> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new DatasetError(`cannot read ${path}: ${(err as Error).message}`);
  }
  return parseIdx(bytes, path);
}

export function encodeIdx(idx: Idx): Uint8Array {
  const code = typeCodeOf(idx.data);
  const type = TYPES[code];
  const count = idx.dims.reduce((a, b) => a * b, 1);
  if (count !== idx.data.length) throw new Error(`IDX dims [${idx.dims.join(', ')}] do not match ${idx.data.length} values`);
  const header = 4 + 4 * idx.dims.length;
  const out = new Uint8Array(header + count * type.size);
  const view = new DataView(out.buffer);
  out[2] = code;
  out[3] = idx.dims.length;
  idx.dims.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  if (type.size === 1) out.set(new Uint8Array(idx.data.buffer, idx.data.byteOffset, count), header);
  else {
    const set = { 2: 'setInt16', 4: code === 0x0d ? 'setFloat32' : 'setInt32', 8: 'setFloat64' }[type.size] as 'setInt16';
    for (let i = 0; i < count; i++) view[set](header + i * type.size, idx.data[i]);
  }
  return out;
}

export async function writeIdx(path: string, idx: Idx): Promise<void> {
  await writeFile(path, encodeIdx(idx));
}
