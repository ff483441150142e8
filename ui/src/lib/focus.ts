// Keyboard focus helpers (Svelte actions). When a screen or step replaces the control that had
// the focus, the focus would fall back to the page's start; these put it where the new content
// begins, so a keyboard or screen-reader user goes on from there.

/** Focuses the element when it appears (a new step's heading, a dialog's first choice),
 * unless `when` is false (the first screen, where nothing was replaced). */
export function focusOnMount(node: HTMLElement, when: boolean = true): void {
  if (when) node.focus();
}

const FOCUSABLE =
  'button:not([disabled]), [href], input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

/**
 * A modal dialog's keyboard rules: Tab and Shift+Tab cycle inside it, Escape calls `close`.
 * The dialog itself takes the focus when it opens; when it closes, the focus goes to
 * `returnTo` (the control that opened it), or else to what had the focus before.
 */
export function modal(node: HTMLElement, options: { close: () => void; returnTo?: HTMLElement | null }) {
  const before = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  let current = options;
  node.focus();
  function keydown(event: KeyboardEvent) {
    if (event.key === 'Escape') {
      event.preventDefault();
      current.close();
      return;
    }
    if (event.key !== 'Tab') return;
    const items = [...node.querySelectorAll<HTMLElement>(FOCUSABLE)];
    if (items.length === 0) return;
    const first = items[0];
    const last = items[items.length - 1];
    const at = document.activeElement;
    if (event.shiftKey && (at === first || at === node)) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && at === last) {
      event.preventDefault();
      first.focus();
    }
  }
  node.addEventListener('keydown', keydown);
  return {
    update(next: { close: () => void; returnTo?: HTMLElement | null }) {
      current = next;
    },
    destroy() {
      node.removeEventListener('keydown', keydown);
      const target = current.returnTo ?? (before !== document.body ? before : null);
      // After the dialog has left the page (a control disabled while it opened is enabled again).
      if (target) setTimeout(() => target.isConnected && target.focus());
    },
  };
}
