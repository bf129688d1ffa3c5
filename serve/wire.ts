import { endianness } from 'node:os';

/** The binary encoding on the wire: rows of little-endian float32, the row count in a header. */
export const BINARY_TYPE = 'application/octet-stream';
export const JSON_TYPE = 'application/json';
export const ROWS_HEADER = 'x-rows';
export const CLASSES_HEADER = 'x-classes';

const LITTLE = endianness() === 'LE';

/** Little-endian float32 bytes of values (a copy, so the result owns aligned memory). */
export function encodeF32(values: Float32Array): Buffer<ArrayBuffer> {
  // Buffer.alloc is never pooled, so its memory starts at offset 0 and a Float32Array view is aligned.
  const out = Buffer.alloc(values.length * 4);
  if (LITTLE) {
    new Float32Array(out.buffer, out.byteOffset, values.length).set(values);
    return out;
  }
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i], i * 4);
  return out;
}

/** Float32 values of little-endian bytes; the length must be a multiple of 4. */
export function decodeF32(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % 4 !== 0) throw new RangeError(`float32 data must be a multiple of 4 bytes, got ${bytes.byteLength}`);
  if (LITTLE) return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** The media type of a Content-Type header, lowercased, without parameters. */
export function mediaType(header: string | undefined): string | undefined {
  return header?.split(';')[0].trim().toLowerCase() || undefined;
}

/** The first index whose value is NaN or ±Infinity, or -1. */
export function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}
