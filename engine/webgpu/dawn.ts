import { cacheBindGroups } from './bind-groups.ts';

/**
 * Dawn (the optional `webgpu` package) in Node: its GPU object, one adapter and one device per
 * thread. Node 20 has no `navigator`; Dawn's object is installed where tfjs-backend-webgpu looks
 * for it. Types are declared here, narrowly, because @webgpu/types comes with an optional package.
 */

export interface AdapterInfo {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}
interface GpuAdapter {
  readonly isFallbackAdapter?: boolean;
  readonly info?: AdapterInfo;
  readonly features: { has(name: string): boolean };
  readonly limits: Record<string, number>;
  requestDevice(descriptor?: object): Promise<GpuDevice>;
}
export interface GpuDevice {
  readonly features: { has(name: string): boolean };
  readonly limits: Record<string, number>;
  readonly lost: Promise<{ reason: string; message: string }>;
  onuncapturederror: ((event: { error?: { message?: string } }) => void) | null;
  destroy(): void;
}

/**
 * What went wrong on this thread's device: GPU errors are reported asynchronously, to a handler,
 * not thrown where the work was recorded. `errors` counts the uncaught ones (an out-of-memory, a
 * validation error), `lost` says why the device went (then nothing more runs on it).
 */
export const gpuFaults: { errors: number; last?: string; lost?: string } = { errors: 0 };
interface Gpu {
  requestAdapter(options?: { powerPreference?: string }): Promise<GpuAdapter | null>;
}

export class DawnUnavailable extends Error {
  readonly name = 'DawnUnavailable';
}

export interface DawnDevice {
  device: GpuDevice;
  info: AdapterInfo;
  /** A hardware GPU: false for a fallback adapter and for CPU implementations (llvmpipe, SwiftShader). */
  hardware: boolean;
  /** Vendor, architecture and name in one line, for logs and the manifest. */
  label: string;
}

const WEBGPU_PACKAGE = 'webgpu';

/** Software rasterisers that report themselves as ordinary adapters. */
const SOFTWARE = /llvmpipe|lavapipe|swiftshader|softpipe|software/i;

export function isHardware(adapter: { isFallbackAdapter?: boolean; info?: AdapterInfo }): boolean {
  const info = adapter.info ?? {};
  if (adapter.isFallbackAdapter || info.isFallbackAdapter) return false;
  return ![info.architecture, info.device, info.description].some((s) => s && SOFTWARE.test(s));
}

export function adapterLabel(info: AdapterInfo): string {
  return [info.vendor, info.architecture, info.description || info.device].filter(Boolean).join(' ') || 'an unnamed adapter';
}

let started: Promise<DawnDevice> | undefined;

/**
 * The thread's Dawn device, created once. The device asks for the adapter's own limits (the
 * defaults cap storage buffers at 128 MiB and workgroup storage at 16 KiB) and for timestamp
 * queries where the adapter has them, so tf.profile reports GPU time per kernel.
 */
export function startDawn(): Promise<DawnDevice> {
  started ??= open().catch((err) => {
    started = undefined;
    throw err;
  });
  return started;
}

async function open(): Promise<DawnDevice> {
  let dawn: { create(flags: string[]): Gpu; globals: Record<string, unknown> };
  try {
    dawn = await import(WEBGPU_PACKAGE);
  } catch (err) {
    throw new DawnUnavailable(`the optional package "${WEBGPU_PACKAGE}" (Dawn) did not load: ${(err as Error).message.split('\n')[0]}`);
  }
  const g = globalThis as unknown as { navigator?: { gpu?: Gpu } };
  let gpu = g.navigator?.gpu;
  if (!gpu) {
    Object.assign(globalThis, dawn.globals);
    gpu = dawn.create([]);
    if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
    else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  }
  let adapter: GpuAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (err) {
    throw new DawnUnavailable(`Dawn could not list GPU adapters: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!adapter) {
    throw new DawnUnavailable('Dawn found no GPU adapter');
  }
  const wanted = ['timestamp-query'].filter((f) => adapter.features.has(f));
  const l = adapter.limits;
  const requiredLimits = {
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxBufferSize: l.maxBufferSize,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
  };
  const device = await adapter.requestDevice({ requiredFeatures: wanted, requiredLimits });
  cacheBindGroups(device as unknown as Parameters<typeof cacheBindGroups>[0]);
  device.onuncapturederror = (event) => {
    gpuFaults.errors++;
    gpuFaults.last = (event.error?.message ?? 'an unnamed GPU error').split('\n')[0];
  };
  void device.lost.then((info) => {
    gpuFaults.lost = `the GPU device was lost (${info.reason}${info.message ? `: ${info.message.split('\n')[0]}` : ''})`;
  });
  const info: AdapterInfo = {
    vendor: adapter.info?.vendor,
    architecture: adapter.info?.architecture,
    device: adapter.info?.device,
    description: adapter.info?.description,
  };
  return { device, info, hardware: isHardware(adapter), label: adapterLabel(info) };
}
