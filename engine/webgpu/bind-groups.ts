/**
 * Bind groups cached on a device. Dawn's createBindGroup is the largest cost of a dispatch in Node
 * (measured on lavapipe: 37 of 62 µs), and tfjs makes one per dispatch, rhobench's kernels too.
 * But a training step binds the same buffers step after step: tfjs's buffer manager hands freed
 * buffers back out, in the same order, so the same (layout, buffers) come round again. Buffers
 * are keyed by identity; the manager destroys pooled buffers only when the whole backend goes, and
 * the cache goes with its device. getBindGroupLayout returns a new object each call, so layouts are
 * memoised per pipeline to be keyed too.
 */

interface Entry {
  binding: number;
  resource: { buffer?: object; offset?: number; size?: number } | object;
}
interface Device {
  createComputePipeline(d: object): { getBindGroupLayout(i: number): object };
  createBindGroup(d: { layout: object; entries: Entry[]; label?: string }): object;
}

/** Bind groups kept per device; the oldest go first beyond this. */
const CAPACITY = 4096;

const patched = new WeakSet<object>();

export function cacheBindGroups(device: Device): void {
  if (patched.has(device)) return;
  patched.add(device);
  const ids = new WeakMap<object, number>();
  let next = 1;
  const idOf = (o: object) => {
    let id = ids.get(o);
    if (id === undefined) ids.set(o, (id = next++));
    return id;
  };

  const createPipeline = device.createComputePipeline.bind(device);
  device.createComputePipeline = (d) => {
    const pipeline = createPipeline(d);
    const layouts = new Map<number, object>();
    const layoutOf = pipeline.getBindGroupLayout.bind(pipeline);
    pipeline.getBindGroupLayout = (i) => {
      let layout = layouts.get(i);
      if (!layout) layouts.set(i, (layout = layoutOf(i)));
      return layout;
    };
    return pipeline;
  };

  const groups = new Map<string, object>();
  const createGroup = device.createBindGroup.bind(device);
  device.createBindGroup = (d) => {
    let key = `${idOf(d.layout)}`;
    for (const e of d.entries) {
      const r = e.resource as { buffer?: object; offset?: number; size?: number };
      // Only buffer bindings are cached (all a compute kernel of tfjs or rhobench binds).
      if (!r.buffer) return createGroup(d);
      key += `|${e.binding}:${idOf(r.buffer)}@${r.offset ?? 0}+${r.size ?? '*'}`;
    }
    let group = groups.get(key);
    if (group) {
      // Refreshed as most recently used.
      groups.delete(key);
    } else {
      group = createGroup(d);
      if (groups.size >= CAPACITY) groups.delete(groups.keys().next().value as string);
    }
    groups.set(key, group);
    return group;
  };
}
