// The instock poll widget: one script tag renders the shopper's next poll into any page,
// sends the answer and thanks the shopper. Plain DOM, no framework, no token (a session's
// poll needs none):
//
//   <script src="https://shop.example/widget/polls.js" data-context="product_page"
//           data-session="…" data-product-id="…" data-category="…" async></script>
//
// data-context: product_page (default), sold_out or checkout_abandoned. data-session: the
// shopper's session id (default: the one the storefront keeps in localStorage, so the answer
// reaches the same shopper's recommendations). The poll goes into the page's element marked
// `data-instock-poll` (or named by data-target), else just before the script tag.
(() => {
  const script = document.currentScript;
  if (!script) return;
  const api = new URL(script.src, location.href).origin;
  const options = script.dataset;
  const context = options.context || "product_page";

  function sessionId() {
    if (options.session) return options.session;
    let id = localStorage.getItem("instock.session");
    if (!id) {
      id = `s-${crypto.randomUUID()}`;
      localStorage.setItem("instock.session", id);
    }
    return id;
  }

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    node.append(...children);
    return node;
  }

  function box() {
    const named = options.target ? document.querySelector(options.target) : null;
    const marked = named || document.querySelector("[data-instock-poll]");
    if (marked) return marked;
    const made = element("div", { "data-instock-poll": "" });
    script.parentNode.insertBefore(made, script);
    return made;
  }

  function render(poll, where) {
    const id = (suffix) => `instock-poll-${poll.id}-${suffix}`;
    const form = element("form", { class: "instock-poll", "data-poll-id": poll.id,
                                   "aria-labelledby": id("title") });
    form.append(element("h2", { id: id("title") }, poll.title));
    for (const question of poll.questions) {
      const fieldset = element("fieldset", { "data-question-id": question.id },
                               element("legend", {}, question.text));
      question.options.forEach((option, i) => {
        const input = element("input", { type: "radio", name: id(question.id),
                                         id: id(`${question.id}-${i}`), value: option.id });
        fieldset.append(element("div", { class: "instock-poll-option" }, input,
                                element("label", { for: input.id }, option.label)));
      });
      form.append(fieldset);
    }
    const send = element("button", { type: "submit" }, "Send my answer");
    const status = element("p", { role: "status", "aria-live": "polite" });
    form.append(send, status);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const answers = poll.questions.flatMap((question) => {
        const chosen = form.querySelector(`input[name="${CSS.escape(id(question.id))}"]:checked`);
        return chosen ? [{ question_id: question.id, option_id: chosen.value }] : [];
      });
      if (!answers.length) {
        status.textContent = "Choose an answer first.";
        return;
      }
      send.disabled = true;
      status.textContent = "Sending…";
      try {
        const response = await fetch(`${api}/v1/polls/${encodeURIComponent(poll.id)}/answers`, {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ session_id: sessionId(), answers }),
        });
        if (response.status !== 201 && response.status !== 409) throw new Error(response.status);
        const thanks = element("p", { role: "status", class: "instock-poll-thanks" },
                               "Thank you! Your answer helps us stock what you want.");
        form.replaceChildren(thanks);
        form.dataset.answered = "true";
      } catch {
        status.textContent = "Your answer could not be sent. Please try again.";
        send.disabled = false;
      }
    });
    where.replaceChildren(form);
  }

  async function start() {
    const query = new URLSearchParams({ session_id: sessionId(), context });
    if (options.productId) query.set("product_id", options.productId);
    if (options.category) query.set("category", options.category);
    const response = await fetch(`${api}/v1/polls/next?${query}`);
    if (response.status !== 200) return; // 204: no poll for this shopper now
    render(await response.json(), box());
  }

  start().catch((error) => console.warn("instock poll", error));
})();
