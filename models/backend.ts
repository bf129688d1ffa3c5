import * as tf from '@tensorflow/tfjs';
import { registerWasmKernels } from './wasm-kernels.ts';

export type BackendName = 'auto' | 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
export interface BackendInfo {
  name: 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
  /** True only when TensorFlow itself reports a GPU device in use. */
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

// Optional too: Dawn's Node binding (about 130 MB) and tfjs's WebGPU backend.
const WEBGPU_PACKAGE = 'webgpu';
const WEBGPU_BACKEND_PACKAGE = '@tensorflow/tfjs-backend-webgpu';

interface GpuAdapterLike {
  isFallbackAdapter?: boolean;
  info?: { vendor?: string; architecture?: string; description?: string; device?: string };
}
interface GpuLike {
  requestAdapter(options?: { powerPreference?: string }): Promise<GpuAdapterLike | null>;
}

/**
 * WebGPU through Dawn (the `webgpu` package). Node 20 has no `navigator`, so Dawn's GPU object is
 * installed where tfjs looks for it. Dawn needs a Vulkan loader (libvulkan.so.1) and a driver on
 * Linux; without an adapter this is BackendUnavailable, never a silent fallback. Not part of 'auto':
 * it is unmeasured here.
 */
async function loadWebgpu(): Promise<BackendInfo> {
  let dawn: { create(flags: string[]): GpuLike; globals: Record<string, unknown> };
  try {
    dawn = await import(WEBGPU_PACKAGE);
    await import(WEBGPU_BACKEND_PACKAGE);
  } catch (err) {
    throw new BackendUnavailable(
      `backend "webgpu" needs the optional packages ${WEBGPU_PACKAGE} and ${WEBGPU_BACKEND_PACKAGE}, which did not load (${(err as Error).message.split('\n')[0]})`,
    );
  }
  const g = globalThis as unknown as { navigator?: { gpu?: GpuLike } };
  if (!g.navigator?.gpu) {
    Object.assign(globalThis, dawn.globals);
    const gpu = dawn.create([]);
    if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
    else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  }
  const adapter = await g.navigator!.gpu!.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new BackendUnavailable(
      'backend "webgpu": Dawn found no GPU adapter (on Linux it needs the Vulkan loader libvulkan.so.1 and a GPU driver with Vulkan support)',
    );
  }
  if (!(await tf.setBackend('webgpu'))) throw new BackendUnavailable('backend "webgpu" found an adapter but did not start');
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.description || info.device].filter(Boolean).join(' ') || 'unnamed adapter';
  const gpu = !adapter.isFallbackAdapter;
  return { name: 'webgpu', gpu, reason: `WebGPU (Dawn) on ${name}${gpu ? '' : ': a software fallback adapter, not a GPU'}` };
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
 * Selects the tfjs backend. 'auto' tries the native TensorFlow package, then wasm, then cpu, and
 * says in `reason` why it skipped each; a named backend that cannot load throws BackendUnavailable.
 */
export async function initBackend(requested: BackendName = 'auto'): Promise<BackendInfo> {
  if (current?.requested === requested && tf.getBackend() === current.info.name) return current.info;
  let info: BackendInfo;
  if (requested === 'auto') {
    const skipped: string[] = [];
    info = await (async () => {
      for (const name of ['tensorflow', 'wasm', 'cpu'] as const) {
        try {
          return await LOADERS[name]();
        } catch (err) {
          skipped.push(`${name}: ${(err as Error).message}`);
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
