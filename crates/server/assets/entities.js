// The dashboard's entities (docs/entities.md): in the card of each topic, the entities that
// show it, each with its value and unit, and a control for those that can be operated
// (switch and light: a toggle; button: press; number: a number field; select: a list;
// media player: its commands). Operating one sends its command through the client's
// `operate`; a refusal is shown on the entity until the next success.

const CONTROLS = ["play", "pause", "stop", "next", "previous"];

/** Whether a value reads as "on" (as the Home Assistant integration reads it). */
export function isOn(value) {
  if (typeof value === "boolean") return value;
  if (typeof value === "number") return value !== 0;
  if (typeof value === "string") return ["on", "true", "open", "yes", "playing"].includes(value.toLowerCase());
  return false;
}

/** The value as text, with the unit when there is one. */
export function valueText(entity) {
  const { value, description } = entity;
  if (!entity.available) return "unavailable";
  if (value === undefined || value === null) return "–";
  const text = typeof value === "object" ? JSON.stringify(value) : String(value);
  return description.unit ? `${text} ${description.unit}` : text;
}

/** Renders `entities` (those showing one topic) into the card's `strip`. */
export function renderEntities(strip, entities, operate) {
  strip.classList.toggle("hidden", entities.length === 0);
  const keep = new Set(entities.map((e) => e.key));
  for (const el of [...strip.children]) if (!keep.has(el.dataset.key)) el.remove();
  for (const entity of entities) {
    let el = strip.querySelector(`[data-key="${CSS.escape(entity.key)}"]`);
    if (!el || el.dataset.platform !== entity.description.platform) {
      const fresh = build(entity, operate);
      if (el) el.replaceWith(fresh); else strip.append(fresh);
      el = fresh;
    }
    update(el, entity);
  }
}

function build(entity, operate) {
  const { key, description } = entity;
  const el = document.createElement("span");
  el.className = "entity";
  el.dataset.key = key;
  el.dataset.platform = description.platform;
  el.innerHTML = '<span class="ename"></span> <b class="evalue"></b> <span class="econtrol"></span><span class="eerror"></span>';
  el.querySelector(".ename").textContent = description.name ?? key;
  el.title = `${description.platform} ${key} (_entities/${key})`;
  const control = el.querySelector(".econtrol");
  const send = (value, which) => {
    el.querySelector(".eerror").textContent = "";
    el.classList.add("busy");
    operate(key, value, which)
      .catch((e) => { el.querySelector(".eerror").textContent = e.message ?? String(e); })
      .finally(() => el.classList.remove("busy"));
  };
  switch (description.platform) {
    case "switch":
    case "light": {
      const b = button("toggle", "off");
      b.addEventListener("click", () => send(b.getAttribute("aria-pressed") !== "true"));
      control.append(b);
      break;
    }
    case "button": {
      const b = button("press", "press");
      b.addEventListener("click", () => send(true));
      control.append(b);
      break;
    }
    case "number": {
      const input = document.createElement("input");
      input.type = "number";
      input.className = "number";
      for (const attr of ["min", "max", "step"]) {
        if (typeof description[attr] === "number") input[attr] = String(description[attr]);
      }
      input.addEventListener("change", () => {
        const n = Number(input.value);
        if (input.value !== "" && Number.isFinite(n)) send(n);
      });
      control.append(input);
      break;
    }
    case "select": {
      const select = document.createElement("select");
      for (const option of description.options ?? []) select.append(new Option(option, option));
      select.addEventListener("change", () => send(select.value));
      control.append(select);
      break;
    }
    case "media_player": {
      for (const which of CONTROLS.filter((c) => description[c])) {
        const b = button(which, which);
        b.addEventListener("click", () => send(true, which));
        control.append(b);
      }
      break;
    }
    default:
  }
  return el;
}

function button(kind, text) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = kind;
  b.textContent = text;
  return b;
}

/** Platforms whose control shows the value: the value is shown only when unavailable. */
const SHOWN_BY_CONTROL = ["switch", "light", "button"];

function update(el, entity) {
  el.classList.toggle("unavailable", !entity.available);
  const { description, value } = entity;
  const shown = entity.available && SHOWN_BY_CONTROL.includes(description.platform);
  el.querySelector(".evalue").textContent = shown ? "" : valueText(entity);
  for (const input of el.querySelectorAll("button, input, select")) input.disabled = !entity.available;
  const toggle = el.querySelector("button.toggle");
  if (toggle) {
    const on = isOn(value);
    toggle.setAttribute("aria-pressed", String(on));
    toggle.textContent = on ? "on" : "off";
  }
  const input = el.querySelector("input.number");
  // Not while someone types in it.
  if (input && document.activeElement !== input && typeof value === "number") input.value = String(value);
  const select = el.querySelector("select");
  if (select && document.activeElement !== select && typeof value === "string") select.value = value;
  if (description.platform === "media_player") {
    const title = entity.title ? ` · ${entity.title}` : "";
    el.querySelector(".evalue").textContent = valueText(entity) + title;
  }
}
