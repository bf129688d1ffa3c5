/**
 * A minimal WebAssembly assembler: just enough to write the SIMD training kernels of
 * engine/wasm/fused.ts as code, without a toolchain (emscripten, wabt) that this project
 * cannot install. A module imports one memory ("env", "memory") — tfjs-backend-wasm's heap —
 * and exports functions whose parameters and results are i32, f32 or v128.
 *
 * Kernels are written with expressions (`Expr`: code that pushes one value) and statements
 * on a `Fn`; `Fn.for` gives counted loops. Encodings follow the WebAssembly core spec
 * (binary format, sections 5.x) and the fixed-width SIMD proposal's opcode table.
 */

export type ValType = 'i32' | 'f32' | 'v128';
const TYPE_CODE: Record<ValType, number> = { i32: 0x7f, f32: 0x7d, v128: 0x7b };

export interface Local {
  readonly index: number;
  readonly type: ValType;
}
/** Emits code that leaves exactly one value on the stack. */
export type Expr = (f: Fn) => void;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const f32Bytes = (v: number) => Array.from(new Uint8Array(new Float32Array([v]).buffer));
const utf8 = (s: string) => Array.from(new TextEncoder().encode(s));
const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const name = (s: string) => [...uleb(utf8(s).length), ...utf8(s)];

/** One function under construction. Parameters are locals 0..params-1. */
export class Fn {
  readonly code: number[] = [];
  /** Its index in the module, set by `Module.add` (needed by callers). */
  index = -1;
  readonly params: Local[];
  private readonly extra: ValType[] = [];

  constructor(readonly name: string, paramTypes: ValType[], readonly results: ValType[] = []) {
    this.params = paramTypes.map((type, index) => ({ index, type }));
  }

  local(type: ValType): Local {
    this.extra.push(type);
    return { index: this.params.length + this.extra.length - 1, type };
  }

  op(...bytes: number[]): this {
    this.code.push(...bytes);
    return this;
  }

  /** Runs expressions for their values, in order (they land on the stack). */
  push(...es: Expr[]): this {
    for (const e of es) e(this);
    return this;
  }

  set(l: Local, e: Expr): this {
    return this.push(e).op(0x21, ...uleb(l.index));
  }

  /** Stores `value` at byte address `addr` + `offset`. */
  store(type: ValType, addr: Expr, value: Expr, offset = 0): this {
    this.push(addr, value);
    if (type === 'i32') return this.op(0x36, 2, ...uleb(offset));
    if (type === 'f32') return this.op(0x38, 2, ...uleb(offset));
    return this.op(0xfd, ...uleb(0x0b), 0, ...uleb(offset));
  }

  /** for (i = from; i < to; i += step) body — signed comparison; `to` is evaluated every turn. */
  for(i: Local, from: Expr, to: Expr, step: number, body: () => void): this {
    this.set(i, from);
    this.op(0x02, 0x40, 0x03, 0x40); // block, loop
    this.push(i32.ge(get(i), to)).op(0x0d, 1); // br_if out of the block
    body();
    this.set(i, i32.add(get(i), i32.const(step)));
    return this.op(0x0c, 0, 0x0b, 0x0b); // br to the loop; end loop; end block
  }

  if(cond: Expr, then: () => void, otherwise?: () => void): this {
    this.push(cond).op(0x04, 0x40);
    then();
    if (otherwise) {
      this.op(0x05);
      otherwise();
    }
    return this.op(0x0b);
  }

  /** Calls a function of the same module (added to it before this one is encoded). */
  call(target: Fn, ...args: Expr[]): this {
    if (target.index < 0) throw new Error(`${this.name} calls ${target.name}, which is in no module yet`);
    return this.push(...args).op(0x10, ...uleb(target.index));
  }

  /** memory.fill(addr, byte, length) from the bulk-memory instructions. */
  fill(addr: Expr, byte: Expr, length: Expr): this {
    return this.push(addr, byte, length).op(0xfc, ...uleb(11), 0);
  }

  body(): number[] {
    const groups: number[][] = [];
    for (let i = 0; i < this.extra.length; ) {
      let j = i;
      while (j < this.extra.length && this.extra[j] === this.extra[i]) j++;
      groups.push([...uleb(j - i), TYPE_CODE[this.extra[i]]]);
      i = j;
    }
    const body = [...vec(groups), ...this.code, 0x0b];
    return [...uleb(body.length), ...body];
  }

  signature(): number[] {
    return [0x60, ...vec(this.params.map((p) => [TYPE_CODE[p.type]])), ...vec(this.results.map((t) => [TYPE_CODE[t]]))];
  }
}

export const get = (l: Local): Expr => (f) => f.op(0x20, ...uleb(l.index));
const binary = (opcode: number[]) => (a: Expr, b: Expr): Expr => (f) => f.push(a, b).op(...opcode);
const unary = (opcode: number[]) => (a: Expr): Expr => (f) => f.push(a).op(...opcode);
const simd = (n: number) => [0xfd, ...uleb(n)];

export const i32 = {
  const: (v: number): Expr => (f) => f.op(0x41, ...sleb(v | 0)),
  add: binary([0x6a]),
  sub: binary([0x6b]),
  mul: binary([0x6c]),
  divS: binary([0x6d]),
  remS: binary([0x6f]),
  and: binary([0x71]),
  shl: binary([0x74]),
  eq: binary([0x46]),
  ne: binary([0x47]),
  lt: binary([0x48]),
  gt: binary([0x4a]),
  le: binary([0x4c]),
  ge: binary([0x4e]),
  eqz: unary([0x45]),
  /** cond ? a : b (both evaluated). */
  select: (a: Expr, b: Expr, cond: Expr): Expr => (f) => f.push(a, b, cond).op(0x1b),
  load: (addr: Expr, offset = 0): Expr => (f) => f.push(addr).op(0x28, 2, ...uleb(offset)),
};

export const f32 = {
  const: (v: number): Expr => (f) => f.op(0x43, ...f32Bytes(v)),
  add: binary([0x92]),
  sub: binary([0x93]),
  mul: binary([0x94]),
  div: binary([0x95]),
  sqrt: unary([0x91]),
  eq: binary([0x5b]),
  gt: binary([0x5e]),
  /** cond ? a : b (both evaluated). */
  select: (a: Expr, b: Expr, cond: Expr): Expr => (f) => f.push(a, b, cond).op(0x1b),
  load: (addr: Expr, offset = 0): Expr => (f) => f.push(addr).op(0x2a, 2, ...uleb(offset)),
};

export const v128 = {
  load: (addr: Expr, offset = 0): Expr => (f) => f.push(addr).op(...simd(0x00), 0, ...uleb(offset)),
  /** Loads one f32 and copies it to all four lanes. */
  loadSplat: (addr: Expr, offset = 0): Expr => (f) => f.push(addr).op(...simd(0x09), 2, ...uleb(offset)),
  splat: unary(simd(0x13)),
  splatI32: unary(simd(0x11)),
  /** (a & mask) | (b & ~mask) */
  bitselect: (a: Expr, b: Expr, mask: Expr): Expr => (f) => f.push(a, b, mask).op(...simd(0x52)),
  eqI32: binary(simd(0x37)),
  and: binary(simd(0x4e)),
  /** a & ~b */
  andNot: binary(simd(0x4f)),
  add: binary(simd(0xe4)),
  sub: binary(simd(0xe5)),
  mul: binary(simd(0xe6)),
  div: binary(simd(0xe7)),
  sqrt: unary(simd(0xe3)),
  max: binary(simd(0xe9)),
  eq: binary(simd(0x41)),
  /** All lanes set: the mask that selects everything. */
  ones: (): Expr => (f) => f.op(...simd(0x0c), ...new Array(16).fill(0xff)),
  zero: (): Expr => (f) => f.op(...simd(0x0c), ...new Array(16).fill(0)),
};

/** Byte address base + 4·index, the address of float `index` of an array at `base`. */
export const at = (base: Expr, index: Expr): Expr => i32.add(base, i32.shl(index, i32.const(2)));

/** Functions in the order of their indices: add a callee before the functions that call it. */
export class Module {
  readonly fns: Fn[] = [];
  add(fn: Fn): Fn {
    fn.index = this.fns.length;
    this.fns.push(fn);
    return fn;
  }
}

/** Encodes a module that imports env.memory and exports every function under its name. */
export function assemble(fns: Fn[]): Uint8Array<ArrayBuffer> {
  fns.forEach((f, i) => {
    if (f.index !== i) throw new Error(`function ${f.name} is at position ${i} but has index ${f.index}: build with Module.add`);
  });
  const section = (id: number, content: number[]) => [id, ...uleb(content.length), ...content];
  const memoryImport = [...name('env'), ...name('memory'), 0x02, 0x00, 0x00]; // memory, no minimum, no maximum
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(fns.map((f) => f.signature()))),
    ...section(2, [1, ...memoryImport]),
    ...section(3, vec(fns.map((_, i) => uleb(i)))),
    ...section(7, vec(fns.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]))),
    ...section(10, vec(fns.map((f) => f.body()))),
  ];
  return new Uint8Array(bytes);
}
