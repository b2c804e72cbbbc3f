import type { RxCollection, RxDocument } from 'rxdb';
import type { Todo } from '../db.js';
import { h, replaceChildren } from '../dom.js';
import { newId } from '../ids.js';

/** The todo list: every change goes to the local RxDB collection; the replication carries it to the other devices. */
export function mountTodos(container: HTMLElement, todos: RxCollection<Todo>): () => void {
  const list = h('ul', { class: 'todos', 'data-testid': 'todo-list' });
  const empty = h('p', { class: 'muted', 'data-testid': 'todo-empty' }, 'Nothing to do yet.');
  const input = h('input', {
    type: 'text',
    placeholder: 'What needs doing?',
    maxlength: '1000',
    'aria-label': 'New todo',
    'data-testid': 'todo-input',
  });
  const form = h(
    'form',
    { class: 'row' },
    input,
    h('button', { type: 'submit', 'data-testid': 'todo-add' }, 'Add'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    void todos.insert({ id: newId(), text, done: false, createdAt: Date.now() });
  });

  // While a row is being edited, redraws wait for the edit to finish so a remote change does not
  // throw away what the user is typing.
  let editing = false;
  let latest: RxDocument<Todo>[] = [];
  const render = () => {
    replaceChildren(list, ...latest.map((todo) => todoRow(todo, editingHooks)));
    empty.hidden = latest.length > 0;
  };
  const editingHooks: EditingHooks = {
    started: () => {
      editing = true;
    },
    finished: () => {
      editing = false;
      render();
    },
  };
  const subscription = todos.find({ sort: [{ createdAt: 'asc' }] }).$.subscribe((documents) => {
    latest = documents;
    if (!editing) render();
  });

  replaceChildren(container, h('h2', {}, 'Todos'), form, empty, list);
  return () => subscription.unsubscribe();
}

interface EditingHooks {
  started(): void;
  finished(): void;
}

function todoRow(todo: RxDocument<Todo>, editing: EditingHooks): HTMLLIElement {
  const checkbox = h('input', {
    type: 'checkbox',
    checked: todo.done,
    'aria-label': `Done: ${todo.text}`,
    'data-testid': 'todo-done',
  });
  checkbox.addEventListener('change', () => void todo.incrementalPatch({ done: checkbox.checked }));

  const text = h('span', { class: 'todo-text', 'data-testid': 'todo-text' }, todo.text);
  const row = h('li', { class: todo.done ? 'done' : undefined, 'data-testid': 'todo', 'data-id': todo.id });

  const startEditing = () => {
    const editor = h('input', {
      type: 'text',
      value: todo.text,
      maxlength: '1000',
      'data-testid': 'todo-editor',
    });
    let done = false;
    const finish = (save: boolean) => {
      if (done) return;
      done = true;
      const value = editor.value.trim();
      editor.replaceWith(text);
      editing.finished();
      if (save && value && value !== todo.text) void todo.incrementalPatch({ text: value });
    };
    editor.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') finish(true);
      if (event.key === 'Escape') finish(false);
    });
    editor.addEventListener('blur', () => finish(true));
    editing.started();
    text.replaceWith(editor);
    editor.focus();
    editor.select();
  };

  replaceChildren(
    row,
    checkbox,
    text,
    h('button', { class: 'ghost', title: 'Edit', 'data-testid': 'todo-edit', onclick: startEditing }, 'Edit'),
    h(
      'button',
      { class: 'ghost', title: 'Delete', 'data-testid': 'todo-delete', onclick: () => void todo.remove() },
      'Delete',
    ),
  );
  return row;
}
