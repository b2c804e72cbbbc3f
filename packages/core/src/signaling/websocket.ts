/**
 * The slice of the WebSocket API the signaling client uses. Browsers' global `WebSocket` and the `ws`
 * package's class (Node 20 has no global WebSocket) both fit it, so neither is imported here.
 */
// Method-style signature: handler parameters compare bivariantly, so both DOM and `ws` event types fit.
type Handler<E> = { bivarianceHack(event: E): void }['bivarianceHack'];

export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ data: unknown }> | null;
  onclose: Handler<{ code: number; reason: string }> | null;
  onerror: Handler<unknown> | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The runtime's own WebSocket (browsers, Node 22+), if any. */
export const globalWebSocket = (): WebSocketConstructor | undefined =>
  (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
