import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A refusal with its HTTP status; `body` fields join `error` in the JSON answer. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The body, refused with 413 as soon as it passes `limit` bytes (a missing or lying content-length cannot get round it). */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        reject(new HttpError(413, `request body is over the limit of ${limit} bytes`, {}, { connection: 'close' }));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!done) resolve(Buffer.concat(chunks, size));
      done = true;
    });
    req.on('error', (err) => {
      if (!done) reject(err);
      done = true;
    });
  });
}

/**
 * Counts the requests in flight so that closing can let them finish. While closing, answers should
 * ask clients to hang up (`closing`), so keep-alive connections do not hold the close open.
 */
export class GracefulClose {
  closing = false;
  private inFlight = 0;
  private drained: (() => void) | undefined;
  private closed: Promise<void> | undefined;

  /** Wraps one request's handling. */
  track<T>(work: Promise<T>): Promise<T> {
    this.inFlight++;
    return work.finally(() => {
      this.inFlight--;
      if (this.closing && this.inFlight === 0) this.drained?.();
    });
  }

  /** Stops accepting, waits for the requests in flight, then drops what is left; idempotent. */
  close(server: Server): Promise<void> {
    return (this.closed ??= (async () => {
      this.closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
      server.closeIdleConnections();
      // Answers in flight went out with `connection: close`; anything left is a client that will not hang up.
      const straggler = setTimeout(() => server.closeAllConnections(), 2000);
      await stopped;
      clearTimeout(straggler);
    })());
  }
}

/** The URL a listening server answers on (IPv6 hosts in brackets). */
export function serverUrl(server: Server, host: string): { url: string; port: number } {
  const port = (server.address() as AddressInfo).port;
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, port };
}

/** Malformed HTTP never reaches a handler: answer it and drop the connection. */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });
}
