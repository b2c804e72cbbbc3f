import { deriveAccount, FerryError } from '@ferry/core';
import { BehaviorSubject } from 'rxjs';
import { openTodoDatabase } from './db.js';
import type { ConflictView, Device, DeviceStatus } from './device-types.js';
import { newId } from './ids.js';

export interface OpenDeviceOptions {
  /** URL the page was loaded from: the Ferry server that served it also runs signaling and the diff server. */
  origin: string;
}

/**
 * Signs this browser in as one device of the account the passphrase names.
 * Network wiring (signaling, peer sessions, diff relay, replication, AI) is added as those libraries land.
 */
export async function openDevice(passphrase: string, _options: OpenDeviceOptions): Promise<Device> {
  const account = await deriveAccount(passphrase);
  const release = await claimThisTab(account.accountId);
  try {
    const clientId = deviceClientId(account.accountId);
    const db = await openTodoDatabase(account.accountId);
    const status$ = new BehaviorSubject<DeviceStatus>({ signaling: 'offline', peers: [], pendingRelay: 0 });
    const conflicts$ = new BehaviorSubject<ConflictView[]>([]);
    return {
      accountTag: account.accountId,
      clientId,
      todos: db.todos,
      status$,
      conflicts$,
      listModels: async () => [],
      ask: () => {
        throw new FerryError('CLOSED', 'no peer connection yet');
      },
      close: async () => {
        await db.close();
        release();
      },
    };
  } catch (error) {
    release();
    throw error;
  }
}

/**
 * The client id names this browser profile's device: it must stay the same across reloads, because
 * the diff server keeps this device's mailbox under it and peers keep sync checkpoints per device.
 */
function deviceClientId(accountTag: string): string {
  const key = `ferry.clientId.${accountTag}`;
  let clientId = localStorage.getItem(key);
  if (!clientId) {
    clientId = `web-${newId()}`;
    localStorage.setItem(key, clientId);
  }
  return clientId;
}

/**
 * Two tabs of one profile would be two devices with one client id and one database. A Web Lock lets
 * only the first tab in; the lock goes away by itself when that tab closes.
 */
function claimThisTab(accountTag: string): Promise<() => void> {
  if (!navigator.locks) return Promise.resolve(() => undefined);
  return new Promise((resolve, reject) => {
    navigator.locks
      .request(`ferry-device-${accountTag}`, { ifAvailable: true }, (lock) => {
        if (!lock) {
          reject(
            new FerryError(
              'LIMIT',
              'This account is already open in another tab of this browser; use that tab.',
            ),
          );
          return undefined;
        }
        return new Promise<void>((release) => resolve(release));
      })
      .catch(reject);
  });
}
