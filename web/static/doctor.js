// The doctor's page: today's appointments, live call status, start/join, a waiting-room message.
"use strict";

let csrf = null;
// Links of the calls started from this page: the patient's to send, the doctor's to join. Only
// their hashes are on the server: after a reload, "New link for the patient" issues a fresh one.
const links = {};

/** What the card says about a call: whether the patient is there (the server knows who is connected). */
function statusText(appointment) {
  switch (appointment.status) {
    case "not_started": return "Not started";
    case "waiting": return appointment.patient_present ? "Patient waiting" : "Patient not here yet";
    case "in_progress": return appointment.patient_present ? "In call" : "In call · patient disconnected";
    default: return `Ended (${Math.round(appointment.duration_seconds / 60)} min)`;
  }
}

function problem(text) {
  const p = document.getElementById("problem");
  p.textContent = text || "";
  p.hidden = !text;
}

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf };
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((json.error && json.error.message) || `error ${response.status}`);
  return json;
}

async function start(appointment) {
  problem("");
  try {
    links[appointment.id] = await api("POST", `/api/appointments/${appointment.id}/video-call/start`);
    await refresh();
  } catch (error) {
    problem(error.message);
  }
}

/**
 * A fresh patient link for a started call (the earlier one stops working: the server keeps only
 * token hashes, so it cannot show the old link again).
 */
async function newPatientLink(appointment) {
  problem("");
  try {
    const fresh = await api("POST", `/api/appointments/${appointment.id}/video-call/patient-link`);
    links[appointment.id] = { ...links[appointment.id], patient_link: fresh.patient_link, renewed: true };
    await refresh();
    document.querySelector(`tr[data-appointment="${appointment.id}"] [data-key="copy"]`)?.focus();
  } catch (error) {
    problem(error.message);
  }
}

async function join(appointment) {
  problem("");
  try {
    const doctorLink = links[appointment.id]?.doctor_link
      || (await api("POST", `/api/appointments/${appointment.id}/video-call/rejoin`)).doctor_link;
    location.href = doctorLink;
  } catch (error) {
    problem(error.message);
  }
}

/** Posts the waiting-room message; the row is redrawn with its preview and says if it was delivered. */
async function postWaitingMessage(appointment, input) {
  const text = input.value.trim();
  try {
    const { delivered } = await api("POST", `/api/appointments/${appointment.id}/video-call/waiting-message`, { text });
    await refresh();
    const sent = document.querySelector(`tr[data-appointment="${appointment.id}"] .sent`);
    if (sent) sent.textContent = !text ? "Message cleared" : delivered ? `Delivered: “${text}”` : `Saved: “${text}”, shown when the patient arrives`;
    problem("");
  } catch (error) {
    problem(error.message);
  }
}

/**
 * What the patient sees in the waiting room (the call page's card, web/call.html `#waiting`) with
 * the doctor's message, and whether it is in front of her now or waits until she opens her link.
 */
function waitingPreview(appointment) {
  const preview = document.createElement("figure");
  preview.className = "waiting-preview";
  const caption = document.createElement("figcaption");
  caption.textContent = "Preview: the patient's waiting room";
  const card = document.createElement("div");
  card.className = "preview-card";
  const title = document.createElement("p");
  title.className = "preview-title";
  title.textContent = "Waiting for your doctor";
  const intro = document.createElement("p");
  intro.textContent = "The call starts as soon as your doctor joins.";
  card.append(title, intro);
  const text = appointment.waiting_message;
  if (text) {
    const message = document.createElement("p");
    message.className = "waiting-message";
    message.textContent = text;
    card.append(message);
  }
  const delivery = document.createElement("p");
  delivery.className = "delivery";
  delivery.dataset.delivered = String(Boolean(text && appointment.patient_present));
  delivery.textContent = !text ? "No message from you."
    : appointment.patient_present ? "✓ Delivered: the patient sees your message now."
      : "Not delivered yet: the patient sees your message when she opens the link.";
  preview.append(caption, card, delivery);
  return preview;
}

function row(appointment) {
  const tr = document.createElement("tr");
  tr.dataset.appointment = appointment.id;
  const time = new Date(appointment.scheduled_at_ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const cells = [time, appointment.patient_name];
  cells.forEach((text) => { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); });
  const status = document.createElement("td");
  status.className = "status";
  status.dataset.status = appointment.status;
  status.dataset.patientPresent = String(Boolean(appointment.patient_present));
  status.textContent = statusText(appointment);
  tr.appendChild(status);
  const actions = document.createElement("td");
  if (appointment.status !== "ended") {
    const button = document.createElement("button");
    button.type = "button";
    const starting = appointment.status === "not_started";
    button.textContent = starting ? "Start video call" : "Join video call";
    button.setAttribute("aria-label", `${button.textContent} with ${appointment.patient_name}`);
    button.dataset.key = "call";
    button.onclick = () => (starting ? start(appointment) : join(appointment));
    actions.appendChild(button);
    const patientLink = links[appointment.id]?.patient_link;
    if (patientLink) {
      const label = document.createElement("label");
      label.textContent = " Patient's link: ";
      const input = document.createElement("input");
      input.readOnly = true;
      input.className = "patient-link";
      input.value = patientLink;
      input.setAttribute("aria-label", `Join link to send to ${appointment.patient_name}`);
      const copy = document.createElement("button");
      copy.type = "button";
      copy.textContent = "Copy";
      copy.dataset.key = "copy";
      copy.setAttribute("aria-label", `Copy the link for ${appointment.patient_name}`);
      const copied = document.createElement("span");
      copied.setAttribute("role", "status");
      copied.className = "copied";
      copy.onclick = () => copyLink(input, copied);
      label.append(input);
      actions.append(label, " ", copy, " ", copied);
      if (links[appointment.id].renewed) {
        const note = document.createElement("span");
        note.className = "link-note";
        note.textContent = " New link: the earlier one no longer works.";
        actions.append(note);
      }
    } else if (!starting) {
      const renew = document.createElement("button");
      renew.type = "button";
      renew.textContent = "New link for the patient";
      renew.dataset.key = "renew";
      renew.setAttribute("aria-label", `New link for the patient, ${appointment.patient_name} (the earlier link stops working)`);
      renew.onclick = () => newPatientLink(appointment);
      actions.append(" ", renew);
    }
    if (appointment.status === "waiting") {
      const input = document.createElement("input");
      input.placeholder = "Message for the waiting room";
      input.maxLength = 200;
      input.setAttribute("aria-label", `Waiting-room message for ${appointment.patient_name}`);
      input.dataset.key = "message";
      const send = document.createElement("button");
      send.type = "button";
      send.textContent = "Send";
      send.dataset.key = "send";
      send.setAttribute("aria-label", `Send the waiting-room message to ${appointment.patient_name}`);
      const sent = document.createElement("span");
      sent.setAttribute("role", "status");
      sent.className = "sent";
      send.onclick = () => postWaitingMessage(appointment, input);
      actions.append(" ", input, " ", send, " ", sent, waitingPreview(appointment));
    }
  }
  tr.appendChild(actions);
  return tr;
}

/** Copies the patient's link and says so (or how to copy it by hand). */
async function copyLink(input, copied) {
  try {
    await navigator.clipboard.writeText(input.value);
    copied.textContent = "Link copied";
  } catch {
    input.select();
    copied.textContent = "Press Ctrl+C (⌘C on a Mac) to copy the selected link";
  }
  setTimeout(() => (copied.textContent = ""), 4000);
}

/** What a row shows: a row is redrawn only when this changes. */
const rowSignature = (a) => JSON.stringify([a.scheduled_at_ms, a.patient_name, a.status, a.patient_present, a.status === "ended" ? a.duration_seconds : 0, links[a.id]?.patient_link, a.waiting_message]);

/**
 * Updates the list in place: unchanged rows stay as they are (keyboard focus and typing too); a
 * changed row is redrawn with the focus back on the same control.
 */
function render(list) {
  const body = document.getElementById("appointments");
  const rows = new Map([...body.querySelectorAll("tr[data-appointment]")].map((tr) => [tr.dataset.appointment, tr]));
  [...body.children].filter((tr) => !tr.dataset.appointment || !list.some((a) => a.id === tr.dataset.appointment)).forEach((tr) => tr.remove());
  let previous = null;
  for (const appointment of list) {
    let tr = rows.get(appointment.id);
    const signature = rowSignature(appointment);
    if (!tr || tr.dataset.signature !== signature) {
      const fresh = row(appointment);
      fresh.dataset.signature = signature;
      const focused = tr && tr.contains(document.activeElement) ? document.activeElement.dataset.key : null;
      if (tr) tr.replaceWith(fresh);
      tr = fresh;
      if (focused) tr.querySelector(`[data-key="${focused}"]`)?.focus();
    }
    const place = previous ? previous.nextSibling : body.firstChild;
    if (place !== tr) body.insertBefore(tr, place);
    previous = tr;
  }
  if (list.length === 0 && body.children.length === 0) {
    body.innerHTML = "<tr><td colspan=4>No appointments today.</td></tr>";
  }
}

async function refresh() {
  const start = new Date(); start.setHours(0, 0, 0, 0);
  const end = new Date(start); end.setDate(end.getDate() + 1);
  try {
    render(await api("GET", `/api/doctor/appointments?from_ms=${start.getTime()}&to_ms=${end.getTime()}`));
  } catch (error) {
    problem(`Could not load the appointments: ${error.message}`);
  }
}

async function main() {
  const me = await fetch("/api/doctor/me").then((r) => (r.ok ? r.json() : null));
  if (!me) { location.href = "/medical/login"; return; }
  csrf = me.csrf_token;
  document.getElementById("doctor-name").textContent = me.display_name;
  document.getElementById("logout-csrf").value = csrf;
  await refresh();
  setInterval(refresh, 3000);
}

main();
