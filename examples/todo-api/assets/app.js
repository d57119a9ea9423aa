// The front end of todo-api. Reads and toggles todos straight from the
// browser through Switchyard's HTTP gateway, with the project's public key
// (served by the app at /api/config); creates them through the app's API.
// The public key sees only the columns marked client_read and writes only
// those marked client_write: never `owner_email`.

const list = document.getElementById("list");
const status = document.getElementById("status");
let publicKey = null;

async function gateway(query) {
  const response = await fetch("/_switchyard/db/query", {
    method: "POST",
    headers: {
      "authorization": `Bearer ${publicKey}`,
      "content-type": "application/json",
    },
    body: JSON.stringify(query),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`${body.error.code}: ${body.error.message}`);
  return body;
}

async function refresh() {
  const { rows } = await gateway({
    select: "todos",
    columns: ["id", "title", "done"],
    order: [{ column: "id", descending: true }],
    limit: 100,
  });
  list.replaceChildren(...rows.map((todo) => {
    const item = document.createElement("li");
    item.className = todo.done ? "done" : "";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = todo.done;
    box.onchange = () => toggle(todo.id, box.checked).catch(show);
    const title = document.createElement("span");
    title.textContent = ` ${todo.title}`;
    item.append(box, title);
    return item;
  }));
}

async function toggle(id, done) {
  await gateway({
    update: "todos",
    set: { done },
    filter: { column: "id", op: "eq", value: id },
  });
  await refresh();
}

document.getElementById("add").onsubmit = async (event) => {
  event.preventDefault();
  const form = event.target;
  const response = await fetch("/api/todos", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title: form.title.value }),
  });
  if (!response.ok) return show(new Error(await response.text()));
  form.reset();
  await refresh().catch(show);
};

function show(error) {
  status.textContent = error.message;
}

(async () => {
  const config = await (await fetch("/api/config")).json();
  publicKey = config.publicKey;
  if (!publicKey) {
    throw new Error("no public key: run `switchyard keys create todo-api public` and `switchyard env set todo-api TODO_PUBLIC_KEY=<the key>`");
  }
  await refresh();
})().catch(show);
