/**
 * Random ids from getRandomValues, which (unlike crypto.randomUUID) also exists when the app is
 * served over plain http from a LAN address.
 */
export function newId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}
