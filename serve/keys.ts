import { createHash, timingSafeEqual } from 'node:crypto';
import type { Disclosure } from './types.ts';

/** One API key as the server holds it: only the sha256 of the secret, never the secret itself. */
export interface ApiKey {
  name: string;
  /** sha256 of the bearer token, lowercase hex. */
  sha256: string;
  disclosure: Disclosure;
  /** Rows this key may have answered, over the ledger's whole history. */
  budget: number;
  rateLimit: { requestsPerSecond: number; burst: number };
  models: string[] | '*';
}

export function hashKey(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** The token of an `Authorization: Bearer <token>` header, or undefined for anything else. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = header === undefined ? null : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return match ? match[1] : undefined;
}

export class KeyRing {
  private readonly digests: Buffer[];

  constructor(readonly keys: readonly ApiKey[]) {
    this.digests = keys.map((k) => {
      if (!/^[0-9a-f]{64}$/.test(k.sha256)) throw new RangeError(`key "${k.name}": sha256 must be 64 lowercase hex digits`);
      return Buffer.from(k.sha256, 'hex');
    });
  }

  /**
   * The key whose hash matches the token's. Every configured digest is compared (equal-length
   * digests, constant-time compare, no early exit), so the time taken says nothing about which key
   * matched or how much of a guess was right.
   */
  lookup(token: string | undefined): ApiKey | undefined {
    const presented = createHash('sha256').update(token ?? '', 'utf8').digest();
    let found = -1;
    for (let i = 0; i < this.digests.length; i++) {
      const same = timingSafeEqual(presented, this.digests[i]);
      found = same && found < 0 ? i : found;
    }
    return token === undefined || found < 0 ? undefined : this.keys[found];
  }
}

export function allowsModel(key: ApiKey, model: string): boolean {
  return key.models === '*' || key.models.includes(model);
}
