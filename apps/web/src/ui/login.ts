import { h, replaceChildren } from '../dom.js';

export interface LoginActions {
  /** A new strong passphrase for a new account. */
  generate(): string;
  /** Derives the account and connects; rejects with a message for the user. */
  open(passphrase: string): Promise<void>;
}

/** The sign-in card: the passphrase is the account, so the same one on every device joins them. */
export function mountLogin(container: HTMLElement, actions: LoginActions): void {
  const passphrase = h('textarea', {
    rows: '3',
    placeholder: 'Your passphrase (the same on every device)',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-label': 'Passphrase',
    'data-testid': 'passphrase',
  });
  const note = h('p', { class: 'muted', 'data-testid': 'login-note' });
  const open = h('button', { type: 'submit', 'data-testid': 'open' }, 'Open');
  const generate = h(
    'button',
    { type: 'button', class: 'ghost', 'data-testid': 'generate' },
    'Generate a new passphrase',
  );
  generate.addEventListener('click', () => {
    passphrase.value = actions.generate();
    note.textContent =
      'Write this passphrase down and enter it on your other devices. It never leaves this device; nobody can recover it for you.';
  });

  const form = h(
    'form',
    { class: 'card login' },
    h('h1', {}, 'Ferry'),
    h(
      'p',
      {},
      'Your todos, synced directly between your own devices, end-to-end encrypted. Servers only pass along ciphertext.',
    ),
    passphrase,
    h('div', { class: 'row' }, open, generate),
    note,
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = passphrase.value.trim();
    if (!value) return;
    open.disabled = true;
    generate.disabled = true;
    note.textContent = 'Deriving your key and connecting…';
    actions.open(value).catch((error: unknown) => {
      open.disabled = false;
      generate.disabled = false;
      note.textContent = error instanceof Error ? error.message : String(error);
    });
  });

  replaceChildren(container, form);
  passphrase.focus();
}
