import { describe, expect, it } from 'vitest';
import type { Transport } from '../src/transport/types.js';

/**
 * What every Transport adapter must do. Each adapter's test file calls this with a factory of
 * connected pairs (automerge-repo's network adapter suite is the model).
 */
export function runTransportConformance(
  name: string,
  connectedPair: () => Promise<[Transport, Transport]>,
): void {
  const collect = (transport: Transport, count: number) =>
    new Promise<Uint8Array[]>((resolve) => {
      const got: Uint8Array[] = [];
      const onMessage = (data: Uint8Array) => {
        got.push(data.slice());
        if (got.length === count) {
          transport.off('message', onMessage);
          resolve(got);
        }
      };
      transport.on('message', onMessage);
    });

  describe(`Transport conformance: ${name}`, () => {
    it('delivers messages whole and in order, both ways', async () => {
      const [a, b] = await connectedPair();
      const sizes = [1, 2, 100, 1000, a.maxMessageSize - 1, a.maxMessageSize];
      const atB = collect(b, sizes.length);
      const atA = collect(a, 1);
      for (const [i, size] of sizes.entries()) a.send(new Uint8Array(size).fill(i + 1));
      b.send(new Uint8Array([42]));
      const received = await atB;
      expect(received.map((m) => m.length)).toEqual(sizes);
      for (const [i, m] of received.entries()) expect(m.every((byte) => byte === i + 1)).toBe(true);
      expect(await atA).toEqual([new Uint8Array([42])]);
      a.close();
    });

    it('reports buffered bytes and emits drain once they are delivered', async () => {
      const [a, b] = await connectedPair();
      const chunk = new Uint8Array(a.maxMessageSize);
      const count = Math.ceil((a.lowWaterMark * 2) / chunk.length) + 1;
      const received = collect(b, count);
      const drained = new Promise<void>((resolve) => a.once('drain', () => resolve()));
      for (let i = 0; i < count; i++) a.send(chunk);
      await drained;
      expect(a.bufferedAmount).toBeLessThanOrEqual(a.lowWaterMark);
      await received;
      a.close();
    });

    it('exposes both DTLS-style fingerprints, mirrored on the two ends', async () => {
      const [a, b] = await connectedPair();
      expect(a.localFingerprint).toBeTruthy();
      expect(a.localFingerprint).toBe(b.remoteFingerprint);
      expect(b.localFingerprint).toBe(a.remoteFingerprint);
      a.close();
    });

    it('refuses oversized messages with TOO_LARGE', async () => {
      const [a] = await connectedPair();
      expect(() => a.send(new Uint8Array(a.maxMessageSize + 1))).toThrowError(
        expect.objectContaining({ code: 'TOO_LARGE' }),
      );
      a.close();
    });

    for (const closer of [0, 1] as const) {
      it(`closes both ends once when ${closer === 0 ? 'the first' : 'the second'} end closes, then refuses sends with CLOSED`, async () => {
        const pair = await connectedPair();
        const closes = [0, 0];
        const closed = pair.map(
          (transport, i) =>
            new Promise<void>((resolve) =>
              transport.on('close', () => {
                closes[i]!++;
                resolve();
              }),
            ),
        );
        pair[closer].close();
        pair[closer].close();
        await Promise.all(closed);
        // A second close event would come from a later turn of the event loop: give it a few.
        await new Promise((resolve) => setTimeout(resolve, 20));
        expect(closes).toEqual([1, 1]);
        for (const transport of pair) {
          expect(transport.closed).toBe(true);
          expect(() => transport.send(new Uint8Array(1))).toThrowError(
            expect.objectContaining({ code: 'CLOSED' }),
          );
        }
      });
    }
  });
}
