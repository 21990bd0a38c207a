// A tiny DOM builder. Text always goes through text nodes, so data never becomes markup.

/** h('button', {class: 'btn', onclick: fn}, 'Save'): `on*` props become listeners,
 *  `true` becomes an empty attribute, `false`/null/undefined are left out. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  el.append(...present(children));
  return el;
}

/** Replaces an element's children, skipping the null/false left by conditionals. */
export function fill(el, ...children) {
  el.replaceChildren(...present(children));
}

const present = (children) => children.flat(Infinity).filter((c) => c != null && c !== false);

/** A labelled form field: label, control, optional hint and an error slot the control
 *  points at with aria-describedby while it has an error. */
export function field(label, control, hint) {
  const id = control.id;
  if (hint) control.setAttribute('aria-describedby', `${id}-hint`);
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    control,
    hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null,
    h('p', { class: 'field-error', id: `${id}-error`, hidden: true }));
}

export function setFieldError(control, message) {
  const error = document.getElementById(`${control.id}-error`);
  const hint = document.getElementById(`${control.id}-hint`);
  error.textContent = message || '';
  error.hidden = !message;
  if (message) control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
  const described = [hint?.id, message ? error.id : null].filter(Boolean).join(' ');
  if (described) control.setAttribute('aria-describedby', described);
  else control.removeAttribute('aria-describedby');
}
