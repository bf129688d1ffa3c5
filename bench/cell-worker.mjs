// A sweep worker thread's first module, plain JavaScript so Node loads it without a loader. On
// Node 20 a loader registered in the main thread (tsx's CLI, `-r tsx`, the bin shim's register())
// serves that thread only, and `--import` is not taken in a worker's execArgv: register tsx here,
// then load the TypeScript entry.
import { register } from 'tsx/esm/api';

register();
await import('./cell-worker.ts');
