import * as tf from '@tensorflow/tfjs';

/**
 * Running rhobench's own WGSL on tfjs-backend-webgpu. tfjs's program format binds exactly one
 * output and wraps the shader in generated code; rhobench's kernels need several outputs (a
 * pooled map and its argmax, a gradient and its bias sums) and in-place updates (Adam's moments),
 * so they are whole WGSL modules, dispatched here into the backend's own command stream: its
 * buffers, its batched submission, its deferred disposal, and its timestamp queries, so tf.profile
 * reports their GPU time like any kernel's. The backend's members used are named in WebGPUBackend
 * below (tfjs-backend-webgpu 4.22); test/webgpu-kernels.test.ts runs every kernel through them.
 */

interface GpuBufferLike {
  readonly size: number;
}
interface PipelineLike {
  getBindGroupLayout(index: number): unknown;
}
interface PassLike {
  setPipeline(p: PipelineLike): void;
  setBindGroup(index: number, group: unknown): void;
  dispatchWorkgroups(x: number, y?: number, z?: number): void;
}
interface DeviceLike {
  createShaderModule(d: { code: string; label?: string }): unknown;
  createComputePipeline(d: object): PipelineLike;
  createBindGroup(d: object): unknown;
  createQuerySet(d: object): unknown;
}
export interface WebGPUBackend {
  device: DeviceLike;
  tensorMap: { get(id: object): { resource: GpuBufferLike | null; values: unknown } };
  makeTensorInfo(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  uploadToGPU(id: object): void;
  makeUniforms(u: { type: 'int32' | 'float32' | 'uint32'; data: number[] }[]): { offset: number; size: number; buffer: unknown };
  commandQueueOwnedIds: WeakSet<object>;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  commandEncoder: { beginComputePass(d: object): PassLike };
  computePassEncoder: PassLike | null;
  dispatchCountInPass: number;
  submitQueue(): void;
  activeTimers?: { name: string; query: Promise<number> }[] | null;
  supportTimestampQuery: boolean;
  querySet: unknown;
  querySetCount: number;
  getQueryTime(): Promise<number>;
  disposeData(id: object, force?: boolean): boolean;
}

export interface Program {
  /** Shown by tf.profile's timers; also labels the shader. */
  name: string;
  /**
   * Everything the shader's text depends on besides the name (its baked constants, its variant):
   * pipelines are cached by name and key, and the text is built only for a new one.
   */
  key: string;
  /**
   * A whole WGSL module with entry point `main`. Bindings in group 0, in this order: the outputs
   * (read_write), the in-place operands (read_write), the inputs (read), then, when `uniforms`
   * is given, one uniform buffer.
   */
  wgsl(): string;
  workgroups: [number, number?, number?];
}

export interface Operands {
  inputs?: tf.TensorInfo[];
  /** Updated in place (bound read_write): the caller must own them alone. */
  inplace?: tf.TensorInfo[];
  outputs?: { shape: number[]; dtype?: tf.DataType }[];
  /** Values of the uniform buffer, in declaration order (i32 or f32 per entry). */
  uniforms?: { type: 'int32' | 'float32' | 'uint32'; data: number[] }[];
}

const pipelines = new WeakMap<object, Map<string, PipelineLike>>();

function pipelineFor(backend: WebGPUBackend, program: Program): PipelineLike {
  let cache = pipelines.get(backend);
  if (!cache) pipelines.set(backend, (cache = new Map()));
  const id = `${program.name} ${program.key}`;
  let pipeline = cache.get(id);
  if (!pipeline) {
    const module = backend.device.createShaderModule({ code: program.wgsl(), label: program.name });
    pipeline = backend.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: program.name });
    cache.set(id, pipeline);
  }
  return pipeline;
}

/** Records one dispatch of `program`; returns its new outputs (the caller owns them). */
export function dispatch(backend: WebGPUBackend, program: Program, ops: Operands): tf.TensorInfo[] {
  const inputs = ops.inputs ?? [];
  const inplace = ops.inplace ?? [];
  const outputs = (ops.outputs ?? []).map(({ shape, dtype }) => backend.makeTensorInfo(shape, dtype ?? 'float32'));
  const bound = [...outputs, ...inplace, ...inputs];
  for (const t of bound) backend.uploadToGPU(t.dataId);
  const pipeline = pipelineFor(backend, program);
  const entries: { binding: number; resource: unknown }[] = bound.map((t, i) => ({ binding: i, resource: { buffer: backend.tensorMap.get(t.dataId).resource } }));
  if (ops.uniforms) entries.push({ binding: bound.length, resource: backend.makeUniforms(ops.uniforms) });
  const bindGroup = backend.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  for (const t of bound) backend.commandQueueOwnedIds.add(t.dataId);

  const timed = backend.activeTimers != null;
  backend.ensureCommandEncoderReady();
  if (timed && backend.supportTimestampQuery) {
    // A pass of its own, with begin and end timestamps, as tfjs times its programs.
    backend.endComputePassEncoder();
    backend.querySet ??= backend.device.createQuerySet({ type: 'timestamp', count: backend.querySetCount });
    backend.computePassEncoder = backend.commandEncoder.beginComputePass({
      timestampWrites: { querySet: backend.querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
    });
  } else if (!backend.computePassEncoder) {
    backend.computePassEncoder = backend.commandEncoder.beginComputePass({});
  }
  const pass = backend.computePassEncoder!;
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  const [x, y = 1, z = 1] = program.workgroups;
  pass.dispatchWorkgroups(x, y, z);
  backend.dispatchCountInPass++;
  if (timed || (tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE') as number) <= backend.dispatchCountInPass) {
    backend.endComputePassEncoder();
    if (timed) backend.activeTimers!.push({ name: program.name, query: backend.getQueryTime() });
    else backend.submitQueue();
  }
  return outputs;
}

/**
 * How many GPU dispatches `fn` issues, tfjs's own and rhobench's (0 off webgpu): what a step
 * costs in launches, which bounds small batches on a GPU.
 */
export async function countDispatches(fn: () => Promise<void>): Promise<number> {
  const pass = (globalThis as { GPUComputePassEncoder?: { prototype: { dispatchWorkgroups(...a: number[]): void } } }).GPUComputePassEncoder?.prototype;
  if (!pass) {
    await fn();
    return 0;
  }
  const original = pass.dispatchWorkgroups;
  let count = 0;
  pass.dispatchWorkgroups = function (...a: number[]) {
    count++;
    return original.apply(this, a);
  };
  try {
    await fn();
  } finally {
    pass.dispatchWorkgroups = original;
  }
  return count;
}

/** WGSL's limit on workgroups per dimension is 65,535: a long 1-D dispatch folds into two. */
export function grid(groups: number): [number, number] {
  if (groups <= 65535) return [Math.max(1, groups), 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y];
}
