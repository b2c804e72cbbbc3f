import type { Device, PeerModel } from '../device-types.js';
import { h, replaceChildren, shortId } from '../dom.js';

/** Asks a model that another device of the account serves, showing its reply token by token. */
export function mountChat(container: HTMLElement, device: Device): () => void {
  let models: PeerModel[] = [];
  let running: AbortController | undefined;

  const select = h('select', { 'aria-label': 'Model', 'data-testid': 'chat-model' });
  const refresh = h('button', { type: 'button', class: 'ghost', 'data-testid': 'chat-refresh' }, 'Refresh');
  const prompt = h('input', {
    type: 'text',
    placeholder: 'Ask the model…',
    'aria-label': 'Prompt',
    'data-testid': 'chat-prompt',
  });
  const send = h('button', { type: 'submit', 'data-testid': 'chat-send' }, 'Send');
  const stop = h(
    'button',
    { type: 'button', class: 'ghost', 'data-testid': 'chat-stop', disabled: true },
    'Stop',
  );
  const output = h('pre', { class: 'chat-output', 'data-testid': 'chat-output' });
  const state = h('p', { class: 'muted', 'data-testid': 'chat-state', 'data-state': 'idle' }, '');

  const setState = (name: 'idle' | 'loading' | 'streaming' | 'done' | 'stopped' | 'error', text: string) => {
    state.dataset.state = name;
    state.textContent = text;
  };

  const loadModels = async () => {
    setState('loading', 'Looking for models on your other devices…');
    try {
      models = await device.listModels();
    } catch (error) {
      models = [];
      setState('error', `Could not list models: ${message(error)}`);
      return;
    }
    replaceChildren(
      select,
      ...models.map((model, index) =>
        h('option', { value: String(index) }, `${model.modelId} on ${shortId(model.peerId)}`),
      ),
    );
    select.disabled = models.length === 0;
    setState('idle', models.length === 0 ? 'No device serves a model right now.' : '');
  };
  refresh.addEventListener('click', () => void loadModels());

  const form = h('form', { class: 'row' }, prompt, send, stop);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const model = models[Number(select.value)];
    const text = prompt.value.trim();
    if (!model || !text || running) return;
    void ask(model, text);
  });
  stop.addEventListener('click', () => running?.abort());

  const ask = async (model: PeerModel, text: string) => {
    running = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    output.textContent = '';
    setState('streaming', `${model.modelId} is answering…`);
    try {
      const reply = device.ask(model, text, running.signal);
      for await (const delta of reply) output.textContent += delta;
      const { completionTokens, finishReason } = await reply.result;
      setState('done', `Done: ${completionTokens} tokens from ${shortId(model.peerId)} (${finishReason}).`);
    } catch (error) {
      if (running.signal.aborted) setState('stopped', 'Stopped.');
      else setState('error', `The stream failed: ${message(error)}`);
    } finally {
      running = undefined;
      send.disabled = false;
      stop.disabled = true;
    }
  };

  // Devices connect after sign-in: look again whenever the set of connected peers changes.
  let peersKey: string | undefined;
  const subscription = device.status$.subscribe((status) => {
    const key = status.peers.join(',');
    if (key === peersKey || running) return;
    peersKey = key;
    void loadModels();
  });

  replaceChildren(
    container,
    h('h2', {}, 'Chat with a device’s model'),
    h('div', { class: 'row' }, select, refresh),
    form,
    state,
    output,
  );
  return () => {
    subscription.unsubscribe();
    running?.abort();
  };
}

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));
