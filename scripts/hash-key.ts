// Prints the sha256 of an API key, the form a serve config stores (keys.N.sha256).
// Usage: npx tsx scripts/hash-key.ts <key>   or   printf %s "$KEY" | npx tsx scripts/hash-key.ts
// (the second keeps the key out of the shell history).
import { randomBytes } from 'node:crypto';
import { hashKey } from '../serve/keys.ts';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

const arg = process.argv[2];
if (arg === '--new') {
  // A fresh random key: print it once, with its hash for the config.
  const key = randomBytes(24).toString('base64url');
  console.log(`key:    ${key}\nsha256: ${hashKey(key)}`);
} else {
  const key = arg ?? (process.stdin.isTTY ? '' : await readStdin());
  if (!key) {
    console.error('usage: tsx scripts/hash-key.ts <key> | --new   (or pipe the key on stdin)');
    process.exitCode = 2;
  } else {
    console.log(hashKey(key));
  }
}
