/**
 * A token bucket: `burst` requests at once, refilled at `perSecond`. `now` is injectable so the
 * refill arithmetic can be tested without sleeping.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(perSecond > 0 && Number.isFinite(perSecond))) throw new RangeError(`rate limit: requestsPerSecond must be a number > 0, got ${perSecond}`);
    if (!(Number.isInteger(burst) && burst >= 1)) throw new RangeError(`rate limit: burst must be an integer ≥ 1, got ${burst}`);
    this.tokens = burst;
    this.last = now();
  }

  /** Takes one token; when none is left, says how many seconds until one will be. */
  take(): { ok: true } | { ok: false; retryAfterS: number } {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.perSecond);
    this.last = t;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterS: (1 - this.tokens) / this.perSecond };
  }
}
