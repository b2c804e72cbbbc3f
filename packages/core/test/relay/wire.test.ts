import {
  compressMessage,
  type DiffHeader,
  deriveSigningKeyPair,
  deriveSubkey,
  openDiff,
  parseSignatureHeaders,
  randomBytes,
  relayAccountId,
  sealDiff,
  signatureBase,
  signingKeyFromSeed,
  signRequest,
  utf8,
  verify,
} from '@ferry/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

const key = signingKeyFromSeed(new Uint8Array(32).fill(7));

describe('request signatures (RFC 9421 profile)', () => {
  it('produces the RFC 9421 signature base and verifies after parsing, for any body and path', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 2000 }),
        fc.constantFrom('/pushDiff', '/pullDiff', '/r/ackDiff'),
        (body, path) => {
          const headers = signRequest(key, { method: 'post', path, body });
          const parsed = parseSignatureHeaders({
            contentDigest: headers['content-digest'],
            signatureInput: headers['signature-input'],
            signature: headers.signature,
          });
          const base = signatureBase('POST', path, parsed.contentDigest, parsed.params);
          expect(verify(parsed.publicKey, utf8(base), parsed.signature)).toBe(true);
          expect(verify(parsed.publicKey, utf8(base.replace(path, '/other')), parsed.signature)).toBe(false);
        },
      ),
      { numRuns: 50 },
    );
  });

  it('writes the exact header shapes', () => {
    const headers = signRequest(key, {
      method: 'POST',
      path: '/pushDiff',
      body: utf8('{}'),
      created: 1700000000,
      nonce: 'n'.repeat(22),
    });
    expect(headers['content-digest']).toBe('sha-256=:RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o=:');
    expect(headers['signature-input']).toMatch(
      /^ferry=\("@method" "@path" "content-digest"\);created=1700000000;nonce="n{22}";keyid="[A-Za-z0-9_-]{43}";alg="ed25519"$/,
    );
    expect(headers.signature).toMatch(/^ferry=:[A-Za-z0-9+/]{86}==:$/);
  });

  it('refuses other profiles before any cryptography', () => {
    const headers = signRequest(key, { method: 'POST', path: '/pushDiff', body: utf8('{}') });
    const good = {
      contentDigest: headers['content-digest'],
      signatureInput: headers['signature-input'],
      signature: headers.signature,
    };
    const variants = [
      { ...good, signatureInput: good.signatureInput.replace('"content-digest"', '') },
      { ...good, signatureInput: good.signatureInput.replace('ed25519', 'hmac-sha256') },
      { ...good, signatureInput: good.signatureInput.replace('ferry=', 'sig1=') },
      { ...good, signature: undefined },
      { ...good, contentDigest: 'sha-512=:AAAA:' },
    ];
    for (const variant of variants) expect(() => parseSignatureHeaders(variant)).toThrow(/Signature|Digest/);
  });

  it('derives a self-certifying account id from the relay public key', () => {
    const accountKey = randomBytes(32);
    const id = relayAccountId(deriveSigningKeyPair(accountKey, 'relaySigning').publicKey);
    expect(id).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(relayAccountId(deriveSigningKeyPair(randomBytes(32), 'relaySigning').publicKey)).not.toBe(id);
  });
});

describe('sealed diffs', () => {
  const diffKey = deriveSubkey(randomBytes(32), 'diff');
  const header: DiffHeader = {
    v: 1,
    id: 'diff-0001',
    from: 'a',
    ep: 'epoch',
    to: [
      ['b', 3],
      ['c', 9],
    ],
    exp: 1e13,
  };

  it('round-trip any payload with the header bound as associated data', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (payload) => {
        const opened = openDiff(diffKey, sealDiff(diffKey, header, payload));
        expect(opened.header).toEqual(header);
        expect(opened.payload).toEqual(payload);
      }),
      { numRuns: 50 },
    );
  });

  it('inflate a compressed payload (z: 1), whose flag the server cannot add or remove', () => {
    const payload = utf8(
      JSON.stringify(Array.from({ length: 400 }, (_, i) => ({ id: `doc-${i}`, done: false }))),
    );
    const compressed = compressMessage(payload)!;
    expect(compressed.length).toBeLessThan(payload.length / 4);
    const sealed = sealDiff(diffKey, { ...header, z: 1 }, compressed);
    expect(openDiff(diffKey, sealed)).toEqual({ header: { ...header, z: 1 }, payload });
    // The flag is in the header, which is the associated data: a server that strips it (padding the
    // JSON to the same length) breaks the tag.
    const headerLength = (sealed[1]! << 8) | sealed[2]!;
    const headerText = new TextDecoder().decode(sealed.subarray(3, 3 + headerLength));
    const stripped = sealed.slice();
    stripped.set(utf8(headerText.replace(',"z":1', '      ')), 3);
    expect(() => openDiff(diffKey, stripped)).toThrow(expect.objectContaining({ code: 'DECRYPT_FAILED' }));
    const plain = sealDiff(diffKey, header, compressed);
    expect(openDiff(diffKey, plain).payload).toEqual(compressed); // without z: the bytes as they are
  });

  it('refuse, with typed errors, a compressed payload that is malformed or announces too much', () => {
    const seal = (payload: Uint8Array) => sealDiff(diffKey, { ...header, z: 1 }, payload);
    const announcing = (length: number, rest: Uint8Array) => {
      const bytes = new Uint8Array(4 + rest.length);
      new DataView(bytes.buffer).setUint32(0, length);
      bytes.set(rest, 4);
      return bytes;
    };
    expect(() => openDiff(diffKey, seal(utf8('ab')))).toThrow(
      expect.objectContaining({
        code: 'BAD_ENCODING',
        message: expect.stringContaining('without its length'),
      }),
    );
    expect(() => openDiff(diffKey, seal(announcing(100, new Uint8Array([0xff, 0xff]))))).toThrow(
      expect.objectContaining({ code: 'BAD_ENCODING' }),
    );
    expect(() => openDiff(diffKey, seal(announcing(2 ** 31, new Uint8Array(8))))).toThrow(
      expect.objectContaining({ code: 'TOO_LARGE' }),
    );
  });

  it('refuses a header the server changed, another key, and garbage', () => {
    const sealed = sealDiff(diffKey, header, utf8('secret'));
    // Same length, so only the header's bytes differ: ["b",3] becomes ["b",4].
    const headerLength = (sealed[1]! << 8) | sealed[2]!;
    const headerText = new TextDecoder().decode(sealed.subarray(3, 3 + headerLength));
    const renumbered = sealed.slice();
    renumbered.set(utf8(headerText.replace('["b",3]', '["b",4]')), 3);
    expect(renumbered).not.toEqual(sealed);
    expect(() => openDiff(diffKey, renumbered)).toThrow(expect.objectContaining({ code: 'DECRYPT_FAILED' }));
    expect(() => openDiff(deriveSubkey(randomBytes(32), 'diff'), sealed)).toThrow(
      expect.objectContaining({ code: 'DECRYPT_FAILED' }),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        expect(() => openDiff(diffKey, bytes)).toThrow();
      }),
    );
  });
});
