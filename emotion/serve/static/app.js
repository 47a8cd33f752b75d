// The page of `emotion serve`: a photo or the camera to POST /predict, boxes and labels drawn, a table of faces.
// Works for any model: the table's columns are the classes of the answer's rows.
"use strict";

const MAX_SIDE = 1280; // the server shrinks images to this longer side: its boxes are in those pixels
const COLORS = ["#e53935", "#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#6d4c41", "#3949ab"];
const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem("emotion-api-key") || "";
let stream = null;

class Failure extends Error {
  constructor(message, gone = false) { super(message); this.gone = gone; }
}

function say(text, error = false) {
  const m = $("message");
  m.textContent = text;
  m.className = error ? "error" : "";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function askKey(why) {
  // The server wants a key: asked once, kept for this tab (sessionStorage), sent as Authorization: Bearer.
  const form = $("keyform");
  form.hidden = false;
  say(why, true);
  $("key").focus();
  return new Promise((resolve) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      key = $("key").value.trim();
      sessionStorage.setItem("emotion-api-key", key);
      form.hidden = true;
      say("");
      describe();
      resolve();
    };
  });
}

function explain(status, detail) {
  if (status === 400 || status === 415) return `not an image emotion can read (${detail})`;
  if (status === 413) return `too large (${detail})`;
  if (status === 503) return `the server cannot answer now (${detail})`;
  return `the server answered ${status}: ${detail}`;
}

async function post(path, blob) {
  for (;;) {
    const headers = { "Content-Type": blob.type && blob.type.startsWith("image/") ? blob.type
                                                                                  : "application/octet-stream" };
    if (key) headers.Authorization = `Bearer ${key}`;
    let r;
    try {
      r = await fetch(path, { method: "POST", body: blob, headers });
    } catch (e) {
      throw new Failure("the server cannot be reached: is `emotion serve` still running?", true);
    }
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (r.status === 401) {
      await askKey(key ? "That API key was refused: enter another." : "This server needs an API key.");
      continue;
    }
    if (!r.ok) throw new Failure(explain(r.status, body && body.detail ? body.detail : r.statusText));
    return body;
  }
}

function shrinkOf(w, h) {
  return Math.min(1, MAX_SIDE / Math.max(w, h));
}

function drawBoxes(ctx, rows, scale) {
  const size = Math.max(12, Math.round(ctx.canvas.width / 40));
  ctx.lineWidth = Math.max(2, size / 6);
  ctx.font = `${size}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  rows.forEach((row, i) => {
    if (!row.box) return;
    const [x, y, w, h] = row.box.map((v) => v * scale);
    const color = COLORS[i % COLORS.length];
    const text = `${row.label} ${(row.p * 100).toFixed(0)}%`;
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, w, h);
    const tw = ctx.measureText(text).width + 8;
    const ty = y > size + 4 ? y : y + h + size + 4;
    ctx.fillStyle = color;
    ctx.fillRect(x, ty - size - 4, tw, size + 4);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x + 4, ty - 2);
  });
}

function table(rows) {
  const classes = rows.length ? Object.keys(rows[0].probs) : [];
  const head = document.createElement("tr");
  for (const name of ["face", "label", ...classes]) {
    const th = document.createElement("th");
    th.textContent = name;
    head.append(th);
  }
  $("head").replaceChildren(head);
  $("results").replaceChildren(...rows.map((row, i) => {
    const tr = document.createElement("tr");
    const cells = [row.face === null ? "whole image" : String(row.face), row.label];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    tr.firstChild.style.color = COLORS[i % COLORS.length];
    for (const name of classes) {
      const td = document.createElement("td");
      td.textContent = row.probs[name].toFixed(3);
      if (name === row.label) td.className = "top";
      tr.append(td);
    }
    return tr;
  }));
}

function summary(rows) {
  const faces = rows.filter((row) => row.face !== null).length;
  if (!faces) return "no face found: the whole image was classified";
  return faces === 1 ? "one face" : `${faces} faces`;
}

async function showPhoto(file) {
  stopCamera();
  if (!file) return;
  const t0 = performance.now();
  say("…");
  let rows;
  try {
    rows = await post("/predict", file);
  } catch (e) {
    $("results").replaceChildren();
    return say(e.message, true);
  }
  const view = $("view");
  const ctx = view.getContext("2d");
  let bitmap = null;
  try { bitmap = await createImageBitmap(file); } catch (e) { bitmap = null; } // a format the browser cannot show
  if (bitmap) {
    view.width = bitmap.width;
    view.height = bitmap.height;
    ctx.drawImage(bitmap, 0, 0);
    drawBoxes(ctx, rows, 1 / shrinkOf(bitmap.width, bitmap.height));
  } else {
    view.width = view.height = 0;
  }
  table(rows);
  const ms = performance.now() - t0;
  document.body.dataset.answerMs = ms.toFixed(0);
  say(`${summary(rows)} (${ms.toFixed(0)} ms)`);
}

function stopCamera() {
  if (!stream) return;
  for (const track of stream.getTracks()) track.stop();
  stream = null;
  $("video").hidden = true;
  $("camera").textContent = "Start the camera";
  $("fps").textContent = "";
}

async function startCamera() {
  if (stream) return stopCamera();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return say("no camera here: the browser offers one only to pages from localhost or https", true);
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } },
                                                          audio: false });
  } catch (e) {
    stream = null;
    if (e.name === "NotAllowedError") return say("the camera was refused: allow it in the site's settings", true);
    if (e.name === "NotFoundError") return say("no camera found", true);
    return say(`the camera cannot start: ${e.message}`, true);
  }
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  $("camera").textContent = "Stop the camera";
  say("live from the camera");
  live(stream);
}

async function live(mine) {
  // One request in flight at a time: the next frame is taken when the last answer has come.
  const video = $("video");
  const grab = document.createElement("canvas");
  const times = [];
  while (stream === mine) {
    const w = video.videoWidth;
    const h = video.videoHeight;
    if (!w || !h) { await sleep(30); continue; }
    grab.width = w;
    grab.height = h;
    grab.getContext("2d").drawImage(video, 0, 0, w, h);
    const frame = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", 0.85));
    let rows;
    try {
      rows = await post("/predict", frame);
    } catch (e) {
      say(e.message, true);
      await sleep(e.gone ? 1000 : 200);
      continue;
    }
    if (stream !== mine) break;
    const view = $("view");
    view.width = w;
    view.height = h;
    const ctx = view.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    drawBoxes(ctx, rows, 1 / shrinkOf(w, h));
    table(rows);
    const now = performance.now();
    times.push(now);
    while (times.length > 2 && now - times[0] > 2000) times.shift();
    const fps = times.length > 1 ? (times.length - 1) * 1000 / (now - times[0]) : 0;
    $("fps").textContent = `${fps.toFixed(1)} frames/s`;
    $("fps").dataset.fps = fps.toFixed(2);
    say(`live from the camera: ${summary(rows)}`);
  }
}

async function describe() {
  // The model's name, when /info answers (it needs the key where keys are set: then it stays blank).
  try {
    const r = await fetch("/info", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    if (r.ok) {
      const info = await r.json();
      $("model").textContent = `${info.model.model} (${info.model.runtime})`;
    }
  } catch (e) { /* the server is gone: said when a photo is sent */ }
}

function init() {
  $("photo").addEventListener("change", (event) => showPhoto(event.target.files[0]));
  $("camera").addEventListener("click", startCamera);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    showPhoto(event.dataTransfer.files[0]);
  });
  describe();
}

init();
