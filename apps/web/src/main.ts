import './style.css';
import { generatePassphrase, useInterpretedChecks } from '@ferry/core';
import { openDevice } from './device.js';
import type { Device } from './device-types.js';
import { h, replaceChildren, shortId } from './dom.js';
import { mountChat } from './ui/chat.js';
import { mountLogin } from './ui/login.js';
import { mountStatus } from './ui/status.js';
import { mountTodos } from './ui/todos.js';

// index.html's Content-Security-Policy refuses 'unsafe-eval': Ferry's schema checks are interpreted,
// and it does not try to compile them (which the page would report as a CSP violation).
useInterpretedChecks();

const root = document.querySelector<HTMLElement>('#app')!;

function showLogin(): void {
  document.body.dataset.view = 'login';
  mountLogin(root, {
    generate: generatePassphrase,
    open: async (passphrase) => showDevice(await openDevice(passphrase, { origin: window.location.href })),
  });
}

function showDevice(device: Device): void {
  const todos = h('section', { id: 'todos', class: 'card' });
  const status = h('section', { id: 'status', class: 'card' });
  const chat = h('section', { id: 'chat', class: 'card' });
  const unmount = [mountTodos(todos, device.todos), mountStatus(status, device), mountChat(chat, device)];
  const lock = h('button', { class: 'ghost', 'data-testid': 'lock' }, 'Lock');
  lock.addEventListener('click', async () => {
    lock.disabled = true;
    window.removeEventListener('pagehide', leave);
    for (const stop of unmount) stop();
    await device.close();
    // A page restored from the back/forward cache had its device closed on pagehide: start over.
    window.addEventListener('pageshow', (event) => {
      if (event.persisted) window.location.reload();
    });

    showLogin();
  });
  // Closing the tab ends the peer sessions with a close frame, so the other devices see this one
  // leave at once instead of after their keepalive timeout.
  const leave = () => void device.close();
  window.addEventListener('pagehide', leave, { once: true });

  replaceChildren(
    root,
    h(
      'header',
      { class: 'bar' },
      h('span', { class: 'brand' }, 'Ferry'),
      h(
        'span',
        {
          class: 'who',
          'data-testid': 'identity',
          title: `account ${device.accountTag}, device ${device.clientId}`,
        },
        `account ${shortId(device.accountTag)} · device ${shortId(device.clientId)}`,
      ),
      h('span', { class: 'spacer' }),
      lock,
    ),
    h('main', { class: 'grid' }, todos, status, chat),
  );
  document.body.dataset.view = 'device';
}

// A page restored from the back/forward cache had its device closed on pagehide: start over.
window.addEventListener('pageshow', (event) => {
  if (event.persisted) window.location.reload();
});

showLogin();
