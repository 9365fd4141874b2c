// The web client's entry point: the state starts the session (or shows sign-in), the UI renders it.
// Layers (docs/web.md): api -> crypto -> store -> client -> state -> ui; the UI sees only the state.

import { AppState } from "./state/state.js";
import { setApp } from "./ui/common.js";
import { App } from "./ui/app.js";
import { html, render } from "./ui/html.js";

const state = new AppState();
setApp(state);
globalThis.supApp = state; // for scripting and the tests (read-only use)
const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
state.boot().catch((error) => {
  console.error("could not start", error);
  state.set({ phase: "auth", toast: { text: `Could not start: ${error.message}`, at: Date.now() } });
});
