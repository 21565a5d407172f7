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
  }

  function button(b, message) {
    const el = document.createElement("button");
    el.type = "button";
    el.textContent = b.label || (b.emoji && b.emoji.name) || "?";
    el.disabled = b.disabled;
    el.dataset.customId = b.custom_id;
    el.addEventListener("click", () => post("click", { message_id: message.id, custom_id: b.custom_id })
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
