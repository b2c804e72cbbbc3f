import { Counter, Gauge, Registry } from 'prom-client';
import type { RelayStorage } from './storage/types.js';

/** Prometheus metrics of one diff server; the stored-data gauges read the (possibly shared) store on scrape. */
export function createRelayMetrics(storage: RelayStorage) {
  const registry = new Registry();
  const requests = new Counter({
    name: 'ferry_relay_requests_total',
    help: 'HTTP requests answered, by route and status',
    labelNames: ['route', 'status'] as const,
    registers: [registry],
  });
  const rejections = new Counter({
    name: 'ferry_relay_rejections_total',
    help: 'Requests refused, by reason',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const pushedBytes = new Counter({
    name: 'ferry_relay_pushed_bytes_total',
    help: 'Bytes of newly stored diffs',
    registers: [registry],
  });
  const stored = {
    diffs: new Gauge({
      name: 'ferry_relay_stored_diffs',
      help: 'Diffs waiting for at least one target',
      registers: [registry],
    }),
    bytes: new Gauge({
      name: 'ferry_relay_stored_bytes',
      help: 'Bytes of diffs waiting for at least one target',
      registers: [registry],
    }),
    accounts: new Gauge({
      name: 'ferry_relay_accounts',
      help: 'Accounts known to the store',
      registers: [registry],
    }),
    devices: new Gauge({ name: 'ferry_relay_devices', help: 'Registered devices', registers: [registry] }),
  };
  return {
    registry,
    requests,
    rejections,
    pushedBytes,
    async render(): Promise<string> {
      const stats = await storage.stats();
      stored.diffs.set(stats.diffs);
      stored.bytes.set(stats.bytes);
      stored.accounts.set(stats.accounts);
      stored.devices.set(stats.devices);
      return registry.metrics();
    },
  };
}
export type RelayMetrics = ReturnType<typeof createRelayMetrics>;
