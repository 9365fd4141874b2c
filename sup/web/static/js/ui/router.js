// Paths of the app (the server serves the page at each of them: sup/http/handlers/web_client.py SCREENS).
//   /login  /signup  /  /chats/<id>  /chats/<id>/info  /new  /new/group  /new/channel  /settings[/<part>]
//   /safety/<user id>  /stickers/<slug> (a shared sticker pack)  /stories/new  /stories/<author id>[/<story id>]
//   /search?q=  /join/<invite code>  /admin[/invites|/audit|/stats]  /verify-email#token=  /reset-password[#token=]
//   /register[#invite=]

import { useEffect, useState } from "./html.js";

export function navigate(path, { replace = false } = {}) {
  if (path === location.pathname) return;
  history[replace ? "replaceState" : "pushState"](null, "", path);
  dispatchEvent(new PopStateEvent("popstate"));
}

addEventListener("sup:navigate", (event) => navigate(event.detail));

// A link in the form docs/api.md gives for a sticker pack (https://host/#/stickers/<slug>) is the screen
// /stickers/<slug>; so is any other "#/<path>".
function fromHash() {
  if (location.hash.startsWith("#/")) navigate(location.hash.slice(1), { replace: true });
}
addEventListener("hashchange", fromHash);
fromHash();

// Where a signed-out visitor was going (an invite link, an email verification link): kept in memory only
// (a code in it is a secret) and taken once, when they have signed in.
let returnTo = null;

export function rememberReturn(path) {
  if (path && path !== "/" && !path.startsWith("/login") && !path.startsWith("/signup")) returnTo = path;
}

export function takeReturn() {
  const path = returnTo;
  returnTo = null;
  return path;
}

/** The current path, re-rendering on navigation. */
export function usePath() {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const changed = () => setPath(location.pathname);
    addEventListener("popstate", changed);
    return () => removeEventListener("popstate", changed);
  }, []);
  return path;
}

/** A link that navigates without reloading the page. */
export function onLink(event) {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const href = event.currentTarget.getAttribute("href");
  if (!href?.startsWith("/")) return;
  event.preventDefault();
  navigate(href);
}
