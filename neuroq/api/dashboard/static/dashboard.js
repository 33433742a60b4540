// NeuroQ dashboard: keeps server-rendered pages live and runs actions and the playground.
// Plain JS, no dependencies. The server renders (and escapes) every fragment; this script only
// swaps fragments in by element id and never builds HTML from job data itself.
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function toLogin() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  function flash(message, bad) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.classList.toggle("bad", !!bad);
  }

  // Long-poll the page's live URL: the server answers when something changed (or after a few
  // seconds), with fragments keyed by element id.
  async function live(url) {
    let version = "";
    const shown = new Map();
    for (;;) {
      try {
        const sep = url.includes("?") ? "&" : "?";
        const reply = await fetch(url + sep + "v=" + encodeURIComponent(version), {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
        });
        if (reply.status === 401) return toLogin();
        if (!reply.ok) throw new Error("HTTP " + reply.status);
        const data = await reply.json();
        version = data.v;
        for (const [id, html] of Object.entries(data.parts)) {
          const el = document.getElementById(id);
          if (el && shown.get(id) !== html) {
            el.innerHTML = html;
            shown.set(id, html);
          }
        }
        await sleep(200);
      } catch (err) {
        await sleep(2000); // server restarting or network down: try again calmly
      }
    }
  }

  async function post(url, body) {
    const reply = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    if (reply.status === 401) {
      toLogin();
      throw new Error("not signed in");
    }
    let data = {};
    try {
      data = await reply.json();
    } catch (err) {
      data = { error: "HTTP " + reply.status };
    }
    if (!reply.ok) throw new Error(data.error || "HTTP " + reply.status);
    return data;
  }

  // Cancel / retry / purge buttons, also those inside fragments swapped in later.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    if (!window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const data = await post("/ui/action/" + encodeURIComponent(button.dataset.action), {
        endpoint_id: button.dataset.endpoint,
        job_id: button.dataset.job || null,
      });
      flash(data.message, false);
    } catch (err) {
      flash(err.message, true);
      button.disabled = false;
    }
  });

  // What to show of one stream chunk: text when the chunk carries text, else its JSON. Stored
  // chunks are RunPod's {"output": piece}; the piece is what the handler yielded.
  function chunkText(chunk) {
    if (chunk && typeof chunk === "object" && Object.keys(chunk).length === 1 && "output" in chunk) {
      chunk = chunk.output;
    }
    if (typeof chunk === "string") return chunk;
    if (chunk && typeof chunk === "object") {
      for (const key of ["text", "token", "delta", "piece", "generated"]) {
        if (typeof chunk[key] === "string") return chunk[key];
      }
    }
    return JSON.stringify(chunk) + "\n";
  }

  function outputText(output) {
    if (output === undefined || output === null) return "";
    if (typeof output === "string") return output;
    if (Array.isArray(output)) return output.map(chunkText).join("");
    return chunkText(output);
  }

  // Submit a form's job and follow it: stream chunks as they come, then the final status.
  // `ids` names the result elements; `body` builds the request; `final` shows a final output.
  function jobForm(form, url, ids, body, final) {
    const result = document.getElementById(ids + "-result");
    const status = document.getElementById(ids + "-status");
    const link = document.getElementById(ids + "-job");
    const out = document.getElementById(ids + "-output");
    let source = null;
    const setStatus = (value) => {
      status.textContent = value;
      status.className = "badge status-" + value.toLowerCase().replace(/_/g, "-");
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (source) source.close();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      out.textContent = "";
      try {
        const job = await post(url, body(new FormData(form)));
        result.hidden = false;
        link.href = job.url;
        link.textContent = job.id;
        link.title = job.id;
        setStatus("IN_QUEUE");
        let streamed = false;
        source = new EventSource(job.stream);
        source.onmessage = (msg) => {
          streamed = true;
          setStatus("IN_PROGRESS");
          out.textContent += chunkText(JSON.parse(msg.data));
        };
        source.addEventListener("status", (msg) => {
          const done = JSON.parse(msg.data);
          setStatus(done.status);
          if (done.error !== undefined) out.textContent += "\n[error] " + outputText(done.error);
          else if (!streamed) out.textContent = final(done.output);
          source.close();
          button.disabled = false;
        });
        source.addEventListener("error", (msg) => {
          if (msg.data) {
            out.textContent += "\n[error] " + JSON.parse(msg.data).error;
            source.close();
            button.disabled = false;
          }
          // without data it is a dropped connection: EventSource reconnects on its own,
          // resuming after the last chunk it saw (Last-Event-ID)
        });
      } catch (err) {
        flash(err.message, true);
        button.disabled = false;
      }
    });
  }

  function playground(form) {
    jobForm(
      form,
      "/ui/playground",
      "pg",
      (fields) => ({
        endpoint_id: fields.get("endpoint_id"),
        prompt: fields.get("prompt"),
        max_length: fields.get("max_length") || null,
        extra: fields.get("extra") || null,
      }),
      outputText,
    );
  }

  // One property's field of an inputSchema form: its value as JSON, `undefined` when empty
  // (the key is left out of the input), or an Error saying why it is not a value.
  function readField(el) {
    const type = el.dataset.type;
    if (el.type === "checkbox") return el.indeterminate ? undefined : el.checked;
    if (el.tagName === "SELECT") return el.value === "" ? undefined : JSON.parse(el.value);
    if (el.validity && el.validity.badInput) return new Error("not a number");
    const text = el.value;
    if (text === "") return undefined;
    if (type === "string") return text;
    if (type === "integer" || type === "number") {
      const value = Number(text);
      if (!Number.isFinite(value)) return new Error("not a number");
      if (type === "integer" && !Number.isInteger(value)) return new Error("not a whole number");
      return value;
    }
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      return new Error("not valid JSON: " + err.message);
    }
    const isArray = Array.isArray(value);
    const isObject = value !== null && typeof value === "object" && !isArray;
    if (type === "array" ? !isArray : !isObject) return new Error("not a JSON " + type);
    return value;
  }

  // Show `value` (from the JSON input; `undefined`: the key is absent) in a field.
  function writeField(el, value) {
    el.setCustomValidity("");
    if (el.type === "checkbox") {
      el.indeterminate = value === undefined; // absent, which is neither true nor false
      el.checked = value === true;
      return;
    }
    const select = el.tagName === "SELECT";
    let text = "";
    if (typeof value === "string" && el.dataset.type === "string" && !select) text = value;
    else if (typeof value === "number" && !select) text = String(value);
    else if (value !== undefined) text = JSON.stringify(value);
    if (select) {
      if (Array.from(el.options).some((option) => option.value === text)) el.value = text;
    } else {
      el.value = text;
    }
  }

  // The fields of the chosen endpoint's inputSchema (a fieldset per endpoint that declares one,
  // rendered and escaped by the server), kept in step with the JSON input both ways: a field
  // changed sets or removes its key, and JSON typed sets the fields of the schema's keys. When
  // an endpoint is chosen, keys its JSON has fill the fields, and the fields (defaults
  // included) fill the keys it lacks.
  function schemaForm(form, input, checked) {
    const sets = Array.from(form.querySelectorAll("fieldset[data-schema-for]"));
    const endpoint = form.elements["endpoint_id"];
    let active = null;
    const fields = () =>
      Array.from(active.querySelectorAll("label[data-prop]")).map((label) => ({
        name: label.dataset.prop,
        el: label.querySelector("[data-type]"),
      }));
    const parsed = () => {
      try {
        const value = JSON.parse(input.value);
        return value !== null && typeof value === "object" && !Array.isArray(value) ? value : {};
      } catch (err) {
        return null; // the JSON is being typed: leave it alone
      }
    };
    const show = (value) => {
      input.value = JSON.stringify(value, null, 2);
      checked();
    };
    const choose = () => {
      const chosen = sets.find((set) => set.dataset.schemaFor === endpoint.value) || null;
      if (chosen === active) return;
      for (const set of sets) {
        set.hidden = set !== chosen;
        set.disabled = set !== chosen;
      }
      active = chosen;
      const value = active && parsed();
      if (!value) return;
      for (const { name, el } of fields()) {
        if (Object.prototype.hasOwnProperty.call(value, name)) writeField(el, value[name]);
        const read = readField(el);
        if (read !== undefined && !(read instanceof Error)) value[name] = read;
      }
      show(value);
    };
    for (const box of form.querySelectorAll("input[type=checkbox][data-unset]")) {
      box.indeterminate = true;
    }
    endpoint.addEventListener("input", choose);
    const fieldChanged = (event) => {
      const label = event.target.closest("label[data-prop]");
      if (!active || !label || !active.contains(label)) return;
      const el = label.querySelector("[data-type]");
      const read = readField(el);
      el.setCustomValidity(read instanceof Error ? read.message : "");
      const value = parsed();
      if (read instanceof Error || !value) return;
      if (read === undefined) delete value[label.dataset.prop];
      else value[label.dataset.prop] = read;
      show(value);
    };
    form.addEventListener("input", fieldChanged);
    form.addEventListener("change", fieldChanged);
    input.addEventListener("input", () => {
      const value = active && parsed();
      if (!value) return;
      for (const { name, el } of fields()) writeField(el, value[name]);
    });
    choose();
  }

  // The JSON request form: the input is checked as JSON while it is typed, and the server
  // checks it again.
  function jsonRequest(form) {
    const input = form.elements["input"];
    const problem = document.getElementById("json-problem");
    const button = form.querySelector("button[type=submit]");
    const check = () => {
      let message = "";
      try {
        JSON.parse(input.value);
      } catch (err) {
        message = "input is not valid JSON: " + err.message;
      }
      problem.textContent = message;
      problem.hidden = !message;
      input.setCustomValidity(message);
      button.disabled = !!message;
    };
    input.addEventListener("input", check);
    check();
    schemaForm(form, input, check);
    jobForm(
      form,
      "/ui/submit",
      "json",
      (fields) => ({ endpoint_id: fields.get("endpoint_id"), input: fields.get("input") }),
      (output) => (output === undefined ? "" : JSON.stringify(output, null, 2)),
    );
  }

  document.addEventListener("DOMContentLoaded", () => {
    const url = document.body.dataset.live;
    if (url) live(url);
    const form = document.getElementById("playground");
    if (form) playground(form);
    const request = document.getElementById("json-request");
    if (request) jsonRequest(request);
  });
})();
