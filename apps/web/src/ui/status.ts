import type { Device, DeviceStatus } from '../device-types.js';
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
  const lastSync = h('dd', { 'data-testid': 'status-last-sync' });
  const peers = h('ul', { class: 'devices', 'data-testid': 'status-peers' });
  const error = h('p', { class: 'error', 'data-testid': 'status-error', hidden: true });
  const conflicts = h('ul', { class: 'conflicts', 'data-testid': 'conflicts' });
  const noConflicts = h('p', { class: 'muted' }, 'No conflicts.');

  const statusSubscription = device.status$.subscribe((status) => {
    connection.textContent = SIGNALING_LABEL[status.signaling];
    connection.dataset.state = status.signaling;
    peerCount.textContent = String(status.peers.length);
    pending.textContent = String(status.pendingRelay);
    lastSync.textContent = status.lastSyncAt ? formatTime(status.lastSyncAt) : 'never';
    replaceChildren(
      peers,
      h('li', { class: 'self', title: device.clientId }, `${shortId(device.clientId)} (this device)`),
      ...status.peers.map((peer) =>
        h(
          'li',
          { class: 'online', title: peer, 'data-testid': 'status-peer', 'data-id': peer },
          shortId(peer),
        ),
      ),
    );
    error.hidden = !status.lastError;
    error.textContent = status.lastError ?? '';
  });

  const conflictSubscription = device.conflicts$.subscribe((list) => {
    noConflicts.hidden = list.length > 0;
    replaceChildren(
      conflicts,
      ...list.map((conflict) =>
        h(
          'li',
          { 'data-testid': 'conflict', 'data-id': conflict.documentId },
          h(
            'div',
            { class: 'conflict-head' },
            `${shortId(conflict.documentId)} at ${formatTime(conflict.at)}`,
          ),
          h(
            'div',
            { class: 'versions' },
            version('Kept', conflict.winner, 'conflict-winner'),
            version('Set aside', conflict.loser, 'conflict-loser'),
          ),
        ),
      ),
    );
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
      h('dt', {}, 'Pending relay diffs'),
      pending,
      h('dt', {}, 'Last sync'),
      lastSync,
    ),
    error,
    h('h3', {}, 'Devices'),
    peers,
    h('h3', {}, 'Conflicts'),
    noConflicts,
    conflicts,
  );
  return () => {
    statusSubscription.unsubscribe();
    conflictSubscription.unsubscribe();
  };
}

const version = (label: string, value: unknown, testId: string): HTMLElement =>
  h(
    'figure',
    {},
    h('figcaption', {}, label),
    h('pre', { 'data-testid': testId }, JSON.stringify(value, null, 2)),
  );
