// Endless scroll: the "Load more" link (a plain link for keyboards and no-JS) fetches the next keyset page
// as it comes into view; copy buttons put a prompt on the clipboard.
(function () {
  "use strict";
  let loading = false;

  async function loadMore(link) {
    if (loading) return;
    loading = true;
    try {
      const url = new URL(link.href);
      url.searchParams.set("fragment", "1");
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) { link.textContent = "Could not load more (retry)"; return; }
      const holder = document.createElement("ul");
      holder.innerHTML = await response.text();
      const item = link.closest("li");
      const grid = item.parentElement;
      item.remove();
      for (const child of Array.from(holder.children)) grid.appendChild(child);
      watch();
    } finally {
      loading = false;
    }
  }

  let observer = null;
  function watch() {
    const link = document.querySelector("[data-more]");
    if (!link) return;
    link.addEventListener("click", (event) => { event.preventDefault(); loadMore(link); });
    if (!("IntersectionObserver" in window)) return;
    if (observer) observer.disconnect();
    observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) loadMore(link);
    }, { rootMargin: "400px" });
    observer.observe(link);
  }

  function copyButtons() {
    for (const button of document.querySelectorAll("button[data-copy]")) {
      button.addEventListener("click", async () => {
        const text = document.getElementById(button.dataset.copy).textContent;
        const label = button.textContent;
        try {
          await navigator.clipboard.writeText(text);
          button.textContent = "Copied";
        } catch (err) {
          const range = document.createRange();
          range.selectNodeContents(document.getElementById(button.dataset.copy));
          window.getSelection().removeAllRanges();
          window.getSelection().addRange(range);
          button.textContent = "Selected: press Ctrl+C";
        }
        setTimeout(() => { button.textContent = label; }, 1500);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => { watch(); copyButtons(); });
})();
