#!/usr/bin/env node
// The project ships TypeScript sources and runs them through tsx, so there is no build step to forget.
import { register } from 'tsx/esm/api';

register();
await import('./cli.ts');
