/**
 * Pieces of WGSL shared by rhobench's WebGPU kernels. Geometry (image sizes, channels, strides,
 * padding) is baked into each shader as constants, so index arithmetic divides by constants; what
 * changes with the batch size comes in a uniform buffer, so a new batch size (the last, short
 * batch of an epoch) reuses the compiled pipeline.
 */

export type Access = 'read' | 'read_write';
export type Scalar = 'f32' | 'i32';

/** Storage bindings in order from 0, then the uniform struct (if fields are given) after them. */
export function bindings(buffers: [name: string, access: Access, type?: Scalar][], uniforms: [name: string, type: Scalar][] = []): string {
  const lines = buffers.map(([name, access, type = 'f32'], i) => `@group(0) @binding(${i}) var<storage, ${access}> ${name}: array<${type}>;`);
  if (uniforms.length) {
    lines.unshift(`struct Uniforms { ${uniforms.map(([n, t]) => `${n}: ${t}`).join(', ')} };`);
    lines.push(`@group(0) @binding(${buffers.length}) var<uniform> u: Uniforms;`);
  }
  return lines.join('\n');
}

/** `const NAME: i32 = value;` for each entry. */
export function consts(values: Record<string, number>): string {
  return Object.entries(values)
    .map(([k, v]) => {
      if (!Number.isInteger(v)) throw new Error(`WGSL constant ${k} must be an integer, got ${v}`);
      return `const ${k}: i32 = ${v};`;
    })
    .join('\n');
}

/** `ch`, `iw`, `ih`, `n`: the NHWC coordinates of element `index` of an image tensor (constants H, W and `channels`). */
export const pixelOf = (channels: string) => `
  let ch = index % ${channels};
  let iw = (index / ${channels}) % W;
  let ih = (index / (${channels} * W)) % H;
  let n = index / (${channels} * W * H);`;

/** Threads per workgroup of the one-thread-per-element kernels. */
export const WG = 64;

/** The entry point of a kernel with one thread per element; `index` is the element, `body` uses it. */
export function perElement(body: string): string {
  return `
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let index = i32(gid.x + gid.y * nwg.x * ${WG}u);
  if (index >= u.count) { return; }
${body}
}`;
}
