import type { ConflictView, Device, DeviceStatus } from '../device-types.js';
import { formatTime, h, replaceChildren, shortId } from '../dom.js';

const SIGNALING_LABEL: Record<DeviceStatus['signaling'], string> = {
  connecting: 'Connecting…',
  online: 'Online',
  offline: 'Offline (reconnecting)',
};

/** Connection state, the account's devices, relay backlog and conflicts with both versions. */
export function mountStatus(container: HTMLElement, device: Device): () => void {
  const connection = h('dd', { 'data-testid': 'status-signaling' });
  const peerCount = h('dd', { 'data-testid': 'status-peer-count' });
  const pending = h('dd', { 'data-testid': 'status-pending-relay' });
  const traffic = h('dd', { 'data-testid': 'status-traffic' });
  const lastSync = h('dd', { 'data-testid': 'status-last-sync' });
  const devices = h('ul', { class: 'devices', 'data-testid': 'status-devices' });
  const error = h('p', { class: 'error', 'data-testid': 'status-error', hidden: true });
  const conflicts = h('ul', { class: 'conflicts', 'data-testid': 'conflicts' });
  const noConflicts = h('p', { class: 'muted' }, 'No conflicts.');

  const statusSubscription = device.status$.subscribe((status) => {
    connection.textContent = SIGNALING_LABEL[status.signaling];
    connection.dataset.state = status.signaling;
    peerCount.textContent = String(status.peers.length);
    pending.textContent = String(status.pendingRelay);
    traffic.textContent = `${status.sent} sent · ${status.received} received`;
    lastSync.textContent = status.lastSyncAt ? formatTime(status.lastSyncAt) : 'never';
    const online = new Set(status.peers);
    replaceChildren(
      devices,
      h('li', { class: 'self', title: device.clientId }, `${shortId(device.clientId)} (this device)`),
      ...[...new Set([...status.peers, ...status.devices])].sort().map((id) =>
        h(
          'li',
          {
            class: online.has(id) ? 'online' : 'away',
            title: id,
            'data-testid': 'status-device',
            'data-id': id,
            'data-state': online.has(id) ? 'online' : 'away',
          },
          `${shortId(id)} ${online.has(id) ? '(connected)' : '(away)'}`,
        ),
      ),
    );
    error.hidden = !status.lastError;
    error.textContent = status.lastError ?? '';
  });

  const conflictSubscription = device.conflicts$.subscribe((list) => {
    noConflicts.hidden = list.length > 0;
    replaceChildren(conflicts, ...list.map(conflictItem));
  });

  replaceChildren(
    container,
    h('h2', {}, 'Status'),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Signaling'),
      connection,
      h('dt', {}, 'Devices connected'),
      peerCount,
      h('dt', { title: 'Changes for away devices not yet stored on the diff server' }, 'Pending relay diffs'),
      pending,
      h('dt', {}, 'Versions'),
      traffic,
      h('dt', {}, 'Last sync'),
      lastSync,
    ),
    error,
    h('h3', {}, 'Devices'),
    devices,
    h('h3', {}, 'Conflicts'),
    noConflicts,
    conflicts,
  );
  return () => {
    statusSubscription.unsubscribe();
    conflictSubscription.unsubscribe();
  };
}

function conflictItem(conflict: ConflictView): HTMLLIElement {
  const version = (label: string, value: unknown, kept: boolean, testId: string) =>
    h(
      'figure',
      { class: kept ? 'kept' : undefined },
      h('figcaption', {}, kept ? `${label} · kept` : label),
      h('pre', { 'data-testid': testId }, JSON.stringify(value, null, 2)),
    );
  return h(
    'li',
    { 'data-testid': 'conflict', 'data-id': conflict.documentId, 'data-kept': conflict.kept },
    h('div', { class: 'conflict-head' }, `${shortId(conflict.documentId)} at ${formatTime(conflict.at)}`),
    h(
      'div',
      { class: 'versions' },
      version('This device', conflict.local, conflict.kept === 'local', 'conflict-local'),
      version(
        `From ${shortId(conflict.from)}`,
        conflict.remote,
        conflict.kept === 'remote',
        'conflict-remote',
      ),
    ),
    conflict.kept === 'merged'
      ? h(
          'figure',
          { class: 'kept' },
          h('figcaption', {}, 'Merged · kept'),
          h('pre', {}, JSON.stringify(conflict.resolved, null, 2)),
        )
      : null,
  );
}
