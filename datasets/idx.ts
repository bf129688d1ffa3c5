import { readFile, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { DatasetError } from './errors.ts';

export { DatasetError } from './errors.ts';

export type IdxData = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
export interface Idx {
  dims: number[];
  data: IdxData;
}

interface IdxType {
  size: number;
  name: string;
  make: (n: number) => IdxData;
  get: (v: DataView, o: number) => number;
  put: (v: DataView, o: number, x: number) => void;
}

// DataView reads and writes big-endian by default, which is what IDX stores.
const TYPES: Record<number, IdxType> = {
  0x08: { size: 1, name: 'u8', make: (n) => new Uint8Array(n), get: (v, o) => v.getUint8(o), put: (v, o, x) => v.setUint8(o, x) },
  0x09: { size: 1, name: 'i8', make: (n) => new Int8Array(n), get: (v, o) => v.getInt8(o), put: (v, o, x) => v.setInt8(o, x) },
  0x0b: { size: 2, name: 'i16', make: (n) => new Int16Array(n), get: (v, o) => v.getInt16(o), put: (v, o, x) => v.setInt16(o, x) },
  0x0c: { size: 4, name: 'i32', make: (n) => new Int32Array(n), get: (v, o) => v.getInt32(o), put: (v, o, x) => v.setInt32(o, x) },
  0x0d: { size: 4, name: 'f32', make: (n) => new Float32Array(n), get: (v, o) => v.getFloat32(o), put: (v, o, x) => v.setFloat32(o, x) },
  0x0e: { size: 8, name: 'f64', make: (n) => new Float64Array(n), get: (v, o) => v.getFloat64(o), put: (v, o, x) => v.setFloat64(o, x) },
};

function typeCodeOf(data: IdxData): number {
  if (data instanceof Uint8Array) return 0x08;
  if (data instanceof Int8Array) return 0x09;
  if (data instanceof Int16Array) return 0x0b;
  if (data instanceof Int32Array) return 0x0c;
  if (data instanceof Float32Array) return 0x0d;
  if (data instanceof Float64Array) return 0x0e;
  throw new DatasetError(`IDX cannot hold a ${(data as object).constructor?.name ?? typeof data}`);
}

const hex = (b: number) => b.toString(16).padStart(2, '0');

/**
 * The IDX format (LeCun's MNIST files): two zero bytes, a type code, the number of dimensions,
 * each dimension as a big-endian u32, then the values big-endian. Every inconsistency is an error.
 */
export function parseIdx(bytes: Uint8Array, file: string): Idx {
  const name = basename(file);
  const fail = (what: string) => new DatasetError(`${name}: ${what} (${file})`);
  if (bytes.length < 4) throw fail(`too short for an IDX header: ${bytes.length} bytes`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw fail(`not an IDX file: magic number starts 0x${hex(bytes[0])}${hex(bytes[1])}, expected 0x0000 (a gzipped file must be unpacked first)`);
  }
  const type = TYPES[bytes[2]];
  if (!type) throw fail(`unknown IDX type code 0x${hex(bytes[2])} (known: 0x08 u8, 0x09 i8, 0x0b i16, 0x0c i32, 0x0d f32, 0x0e f64)`);
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
  const data = type.make(count);
  // Single bytes have no byte order: one bulk copy (this is the path the 47 MB MNIST file takes).
  if (type.size === 1) new Uint8Array(data.buffer).set(bytes.subarray(header, expected));
  else for (let i = 0; i < count; i++) data[i] = type.get(view, header + i * type.size);
  return { dims, data };
}

export async function readIdx(path: string): Promise<Idx> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new DatasetError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseIdx(bytes, path);
}

/** The bytes of an IDX file holding idx (big-endian, type code from the array's class). */
export function encodeIdx(idx: Idx): Uint8Array {
  const code = typeCodeOf(idx.data);
  const type = TYPES[code];
  if (idx.dims.length < 1 || idx.dims.length > 255 || idx.dims.some((d) => !Number.isInteger(d) || d < 1 || d > 0xffffffff)) {
    throw new DatasetError(`cannot write IDX dims [${idx.dims.join(', ')}]: need 1 to 255 dimensions, each a positive 32-bit integer`);
  }
  const count = idx.dims.reduce((a, b) => a * b, 1);
  if (count !== idx.data.length) throw new DatasetError(`cannot write IDX: dims [${idx.dims.join(', ')}] do not match ${idx.data.length} values`);
  const header = 4 + 4 * idx.dims.length;
  const out = new Uint8Array(header + count * type.size);
  const view = new DataView(out.buffer);
  out[2] = code;
  out[3] = idx.dims.length;
  idx.dims.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  if (type.size === 1) out.set(new Uint8Array(idx.data.buffer, idx.data.byteOffset, count), header);
  else for (let i = 0; i < count; i++) type.put(view, header + i * type.size, idx.data[i]);
  return out;
}

/** Writes an IDX file (used to cache Fashion-MNIST in binary form). */
export async function writeIdx(path: string, idx: Idx): Promise<void> {
  await writeFile(path, encodeIdx(idx));
}
