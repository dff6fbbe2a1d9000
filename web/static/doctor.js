// The doctor's page: today's appointments, live call status, start/join, a waiting-room message.
"use strict";

let csrf = null;
// Links of the calls started from this page: the patient's to send, the doctor's to join.
const links = {};
const STATUS_TEXT = { not_started: "Not started", waiting: "Waiting", in_progress: "In progress", ended: "Ended" };

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

async function postWaitingMessage(appointment, input) {
  try {
    await api("POST", `/api/appointments/${appointment.id}/video-call/waiting-message`, { text: input.value });
    input.setAttribute("aria-describedby", "");
    problem("");
  } catch (error) {
    problem(error.message);
  }
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
  status.textContent = STATUS_TEXT[appointment.status];
  if (appointment.status === "ended") status.textContent += ` (${Math.round(appointment.duration_seconds / 60)} min)`;
  tr.appendChild(status);
  const actions = document.createElement("td");
  if (appointment.status !== "ended") {
    const button = document.createElement("button");
    button.type = "button";
    const starting = appointment.status === "not_started";
    button.textContent = starting ? "Start video call" : "Join video call";
    button.setAttribute("aria-label", `${button.textContent} with ${appointment.patient_name}`);
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
      copy.onclick = () => navigator.clipboard && navigator.clipboard.writeText(patientLink);
      label.append(input);
      actions.append(label, " ", copy);
    }
    if (appointment.status === "waiting") {
      const input = document.createElement("input");
      input.placeholder = "Message for the waiting room";
      input.maxLength = 200;
      input.setAttribute("aria-label", `Waiting-room message for ${appointment.patient_name}`);
      const send = document.createElement("button");
      send.type = "button";
      send.textContent = "Send";
      send.onclick = () => postWaitingMessage(appointment, input);
      actions.append(" ", input, " ", send);
    }
  }
  tr.appendChild(actions);
  return tr;
}

async function refresh() {
  const start = new Date(); start.setHours(0, 0, 0, 0);
  const end = new Date(start); end.setDate(end.getDate() + 1);
  try {
    const list = await api("GET", `/api/doctor/appointments?from_ms=${start.getTime()}&to_ms=${end.getTime()}`);
    const body = document.getElementById("appointments");
    const typing = document.activeElement && document.activeElement.tagName === "INPUT" && !document.activeElement.readOnly;
    if (typing) return; // don't replace the row while the doctor is typing
    body.replaceChildren(...(list.length ? list.map(row) : [Object.assign(document.createElement("tr"), { innerHTML: "<td colspan=4>No appointments today.</td>" })]));
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
