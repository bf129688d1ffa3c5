import * as tf from '@tensorflow/tfjs';
import { startDawn, type DawnDevice } from './dawn.ts';
import { registerWebgpuKernels } from './kernels.ts';

const BACKEND_PACKAGE = '@tensorflow/tfjs-backend-webgpu';

interface TensorData {
  values: unknown;
  dtype: string;
}
interface WebGPUBackendClass {
  new (device: unknown, adapterInfo?: unknown): tf.KernelBackend & { tensorMap: { get(id: object): TensorData | undefined } };
}

/** What a synchronous read of a GPU tensor says in Node, where tfjs would reach for OffscreenCanvas. */
export const SYNC_READ_MESSAGE =
  'a tensor on the WebGPU backend was read synchronously (dataSync, arraySync or bufferSync): ' +
  'in Node that needs OffscreenCanvas, which does not exist; read it with `await t.data()`';

/**
 * tfjs-backend-webgpu on this thread's Dawn device. The package registers its own factory at
 * import, and only if `navigator.gpu` exists by then; rhobench registers one of its own instead,
 * on the device startDawn opened (with the adapter's limits and timestamp queries), whose
 * synchronous read of GPU data fails with a message that says what to do rather than
 * "OffscreenCanvas is not defined". Data still on the CPU reads synchronously as before.
 */
export function registerWebgpu(): Promise<DawnDevice> {
  registered ??= register().catch((err) => {
    registered = undefined;
    throw err;
  });
  return registered;
}

let registered: Promise<DawnDevice> | undefined;

async function register(): Promise<DawnDevice> {
  const dawn = await startDawn();
  let WebGPUBackend: WebGPUBackendClass;
  try {
    ({ WebGPUBackend } = (await import(BACKEND_PACKAGE)) as { WebGPUBackend: WebGPUBackendClass });
  } catch (err) {
    throw new Error(`the optional package ${BACKEND_PACKAGE} did not load: ${(err as Error).message.split('\n')[0]}`);
  }
  class NodeWebGPUBackend extends WebGPUBackend {
    override readSync(dataId: object) {
      const data = this.tensorMap.get(dataId);
      if (data && data.values == null && data.dtype !== 'string' && data.dtype !== 'complex64') throw new Error(SYNC_READ_MESSAGE);
      return super.readSync(dataId);
    }
  }
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new NodeWebGPUBackend(dawn.device, dawn.info), 1);
  registerWebgpuKernels();
  return dawn;
}
