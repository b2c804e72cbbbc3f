/** A tiny element builder: the app is small enough that plain DOM stays readable. */
type Child = Node | string | null | undefined | false;
type Attributes = Record<string, string | boolean | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (typeof value === 'function') element.addEventListener(name.replace(/^on/, ''), value);
    else if (value === true) element.setAttribute(name, '');
    else element.setAttribute(name, value);
  }
  element.append(...children.filter((child): child is Node | string => Boolean(child)));
  return element;
}

/** Replaces every child of `parent`. */
export const replaceChildren = (parent: Element, ...children: Child[]): void =>
  parent.replaceChildren(...children.filter((child): child is Node | string => Boolean(child)));

/** A short, recognisable form of a long id for display ("a1b2c3…"). */
export const shortId = (id: string): string => (id.length > 10 ? `${id.slice(0, 8)}…` : id);

export const formatTime = (ms: number): string => new Date(ms).toLocaleTimeString();
