import * as tf from '@tensorflow/tfjs';
import { registerWasmKernels } from './wasm/kernels.ts';
import { registerWebgpu } from './webgpu/backend.ts';
import { gpuFaults, type DawnDevice } from './webgpu/dawn.ts';
import { probeDawn } from './webgpu/probe.ts';

export type BackendName = 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
export interface BackendInfo {
  name: 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
  /** True only for a real GPU: tfjs-node-gpu reporting its CUDA device in use, or WebGPU on a hardware adapter. */
  gpu: boolean;
  reason: string;
}

export class BackendUnavailable extends Error {
  readonly name = 'BackendUnavailable';
}

// A variable specifier keeps the optional package out of the type checker and the bundler's view.
const NATIVE_PACKAGE = '@tensorflow/tfjs-node-gpu';

async function loadTensorflow(): Promise<BackendInfo> {
  try {
    await import(NATIVE_PACKAGE);
  } catch (err) {
    throw new BackendUnavailable(
      `backend "tensorflow" needs the optional package ${NATIVE_PACKAGE}, which did not load (${(err as Error).message.split('\n')[0]}); ` +
        'it installs only with internet access and CUDA 11.x libraries',
    );
  }
  if (!(await tf.setBackend('tensorflow'))) throw new BackendUnavailable(`${NATIVE_PACKAGE} loaded but its backend did not start`);
  const gpu = Boolean((tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice);
  return {
    name: 'tensorflow',
    gpu,
    reason: gpu
      ? `${NATIVE_PACKAGE} with a CUDA GPU`
      : `${NATIVE_PACKAGE} loaded but found no usable GPU (it needs CUDA 11.x runtime libraries): running on CPU`,
  };
}

/**
 * WebGPU through Dawn (optional packages `webgpu` and `@tensorflow/tfjs-backend-webgpu`). Without
 * an adapter this is BackendUnavailable, never a silent fallback; a software adapter (Mesa's
 * llvmpipe, a CPU) starts but is recorded as gpu: false.
 */
async function loadWebgpu(): Promise<BackendInfo> {
  const probe = await probeDawn();
  if (!probe.found) throw new BackendUnavailable(`backend "webgpu": ${probe.why}${probe.noAdapter ? `: ${NO_ADAPTER_HINT}` : ''}`);
  let dawn: DawnDevice;
  try {
    dawn = await registerWebgpu();
  } catch (err) {
    throw new BackendUnavailable(`backend "webgpu": ${(err as Error).message}`);
  }
  if (!(await tf.setBackend('webgpu'))) throw new BackendUnavailable(`backend "webgpu" found ${dawn.label} but did not start`);
  return {
    name: 'webgpu',
    gpu: dawn.hardware,
    reason: `WebGPU (Dawn) on ${dawn.label}${dawn.hardware ? '' : ': a software adapter (a CPU), not a GPU'}`,
  };
}

const NO_ADAPTER_HINT =
  'on Linux it needs the Vulkan loader (libvulkan.so.1) and a Vulkan driver: a GPU driver, or for a CPU stand-in ' +
  "Mesa 25's lavapipe with VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.json";

/**
 * Faults of the backend reported after the fact, as a GPU reports them: `errors` GPU errors so
 * far (the last one's message in `last`), and `lost` when the device is gone for good. A CPU
 * backend has none.
 */
export function backendFaults(): { errors: number; last?: string; lost?: string } {
  return tf.getBackend() === 'webgpu' ? { ...gpuFaults } : { errors: 0 };
}

const PROCESS_EVENTS = ['uncaughtException', 'unhandledRejection'] as const;

/**
 * Emscripten's Node glue installs process handlers that rethrow every uncaught error, which
 * prints a minified line of its own source over the real message. rhobench reports its errors
 * itself, so handlers added while the module starts are removed again.
 */
async function withoutNewProcessHandlers<T>(fn: () => Promise<T>): Promise<T> {
  type Listener = (...args: unknown[]) => void;
  const listeners = (e: (typeof PROCESS_EVENTS)[number]) => process.listeners(e as 'uncaughtException') as Listener[];
  const before = Object.fromEntries(PROCESS_EVENTS.map((e) => [e, new Set(listeners(e))]));
  try {
    return await fn();
  } finally {
    for (const e of PROCESS_EVENTS) {
      for (const l of listeners(e)) if (!before[e].has(l)) process.removeListener(e as 'uncaughtException', l);
    }
  }
}

async function loadWasm(): Promise<BackendInfo> {
  let ok = false;
  try {
    ok = await withoutNewProcessHandlers(async () => {
      await import('@tensorflow/tfjs-backend-wasm');
      registerWasmKernels();
      return tf.setBackend('wasm');
    });
  } catch (err) {
    throw new BackendUnavailable(`backend "wasm" failed to start: ${(err as Error).message}`);
  }
  if (!ok) throw new BackendUnavailable('backend "wasm" failed to start');
  return { name: 'wasm', gpu: false, reason: 'WebAssembly (SIMD, one thread) with rhobench\'s training kernels' };
}

async function loadCpu(): Promise<BackendInfo> {
  if (!(await tf.setBackend('cpu'))) throw new BackendUnavailable('backend "cpu" failed to start');
  return { name: 'cpu', gpu: false, reason: 'pure-JavaScript reference backend (slow)' };
}

const LOADERS = { tensorflow: loadTensorflow, webgpu: loadWebgpu, wasm: loadWasm, cpu: loadCpu } as const;
let current: { requested: BackendName; info: BackendInfo } | undefined;

/**
 * auto's candidates in order, each either starting or saying why not. WebGPU counts only on a
 * hardware adapter (Dawn is probed before the backend is set), and the native package only with
 * its GPU: on the CPU it is slower than wasm with rhobench's kernels.
 */
const AUTO: { name: 'tensorflow' | 'webgpu' | 'wasm' | 'cpu'; start(): Promise<BackendInfo> }[] = [
  {
    name: 'webgpu',
    async start() {
      const probe = await probeDawn();
      if (!probe.found) throw new BackendUnavailable(probe.why);
      if (!probe.hardware) throw new BackendUnavailable(`only a software adapter (${probe.label}), which is a CPU`);
      return loadWebgpu();
    },
  },
  {
    name: 'tensorflow',
    async start() {
      const info = await loadTensorflow();
      if (!info.gpu) throw new BackendUnavailable(info.reason);
      return info;
    },
  },
  { name: 'wasm', start: loadWasm },
  { name: 'cpu', start: loadCpu },
];

/**
 * Selects the tfjs backend. 'auto' takes WebGPU on a hardware adapter, else the native TensorFlow
 * package on its GPU, else wasm, else cpu, and says in `reason` why it skipped each; a named
 * backend that cannot load throws BackendUnavailable.
 */
export async function initBackend(requested: BackendName = 'auto'): Promise<BackendInfo> {
  if (current?.requested === requested && tf.getBackend() === current.info.name) return current.info;
  let info: BackendInfo;
  if (requested === 'auto') {
    const skipped: string[] = [];
    info = await (async () => {
      for (const candidate of AUTO) {
        try {
          return await candidate.start();
        } catch (err) {
          skipped.push(`${candidate.name}: ${(err as Error).message}`);
        }
      }
      throw new BackendUnavailable(`no tfjs backend could start:\n${skipped.join('\n')}`);
    })();
    if (skipped.length) info = { ...info, reason: `${info.reason} (skipped ${skipped.join('; ')})` };
  } else if (requested in LOADERS) {
    info = await LOADERS[requested as keyof typeof LOADERS]();
  } else {
    throw new BackendUnavailable(`unknown backend "${requested}": choose auto, tensorflow, webgpu, wasm or cpu`);
  }
  await tf.ready();
  current = { requested, info };
  return info;
}
