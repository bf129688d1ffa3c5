/** rhobench's WebGPU kernels (filled in by the commits that add them). */
export function registerWebgpuKernels(): void {}
