// The sandbox's channel page: polls what the chosen member sees and renders it (textContent only: message
// text is never parsed as HTML); /imagine and button clicks go to the sandbox's user API as JSON.
(function () {
  "use strict";
  const body = document.body;
  const channel = body.dataset.channel;
  const list = document.getElementById("messages");
  let member = body.dataset.as;
  let lastShown = "";

  async function post(path, data) {
    const response = await fetch(`/client/${channel}/${path}`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ as: member, ...data }),
    });
    if (!response.ok) throw new Error(await response.text());
    return response.json();
  }

  // A modal the bot opened (🖋 Remix and the like), as a native <dialog>: focus stays inside it, Esc closes.
  function openModal(modal) {
    const dialog = document.createElement("dialog");
    dialog.id = "modal";
    const form = document.createElement("form");
    const title = document.createElement("h2");
    title.textContent = modal.title;
    form.append(title);
    for (const input of modal.inputs) {
      const label = document.createElement("label");
      label.textContent = input.label;
      const field = document.createElement(input.paragraph ? "textarea" : "input");
      field.name = input.custom_id;
      field.value = input.value;
      field.required = input.required;
      label.append(field);
      form.append(label);
    }
    const submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = "Submit";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", () => dialog.close());
    form.append(submit, cancel);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const fields = Object.fromEntries(new FormData(form).entries());
      post("modal", { custom_id: modal.custom_id, message_id: modal.message_id, fields })
        .catch((err) => showError(err.message));
      dialog.close();
    });
    dialog.addEventListener("close", () => dialog.remove());
    dialog.append(form);
    document.body.append(dialog);
    dialog.showModal();
  }

  function button(b, message) {
    const el = document.createElement("button");
    el.type = "button";
    el.textContent = b.label || (b.emoji && b.emoji.name) || "?";
    el.disabled = b.disabled;
    el.dataset.customId = b.custom_id;
    el.addEventListener("click", () => post("click", { message_id: message.id, custom_id: b.custom_id })
      .then((answer) => { if (answer.modal) openModal(answer.modal); })
      .catch((err) => showError(err.message)));
    return el;
  }

  function render(messages) {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    list.replaceChildren(...messages.map((m) => {
      const el = document.createElement("article");
      el.className = "msg" + (m.ephemeral ? " ephemeral" : "");
      el.dataset.id = m.id;
      const author = document.createElement("div");
      author.className = "author";
      author.textContent = m.author + (m.ephemeral ? " (only you can see this)" : "");
      const content = document.createElement("div");
      content.className = "content";
      content.textContent = [m.content, ...m.embeds.map((e) => [e.title, e.description].filter(Boolean).join("\n"))]
        .filter(Boolean).join("\n");
      el.append(author, content);
      for (const a of m.attachments) {
        if (!a.image) continue;
        const img = document.createElement("img");
        img.src = a.url; img.alt = a.filename;
        el.append(img);
      }
      if (m.buttons.length) {
        const row = document.createElement("div");
        row.className = "buttons";
        row.append(...m.buttons.map((b) => button(b, m)));
        el.append(row);
      }
      return el;
    }));
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function showError(text) {
    const el = document.createElement("p");
    el.className = "error";
    el.setAttribute("role", "alert");
    el.textContent = text;
    list.append(el);
  }

  async function poll() {
    try {
      const response = await fetch(`/client/${channel}/messages?as=${encodeURIComponent(member)}`);
      const text = await response.text();
      if (response.ok && text !== lastShown) { lastShown = text; render(JSON.parse(text)); }
    } finally {
      setTimeout(poll, 700);
    }
  }

  document.getElementById("as").addEventListener("change", (event) => {
    member = event.target.value; lastShown = "";
  });
  document.getElementById("imagine").addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(event.target).entries());
    post("imagine", data).then(() => { document.getElementById("prompt").value = ""; })
      .catch((err) => showError(err.message));
  });
  poll();
})();
