// The shell: which screen a path shows. On a desktop the chat list and the open screen sit side by side;
// at phone width one of them fills the window (the list at /, the screen elsewhere, with a way back).

import { html, useEffect } from "./html.js";
import { AuthScreen } from "./auth.js";
import { CallOverlay } from "./call.js";
import { ChatScreen } from "./chat.js";
import { ChatInfo } from "./chatinfo.js";
import { ChatList } from "./chatlist.js";
import { app, deviceLabel, lazy, StatusBar, useApp } from "./common.js";
import { NewChat } from "./newchat.js";
import { navigate, onLink, rememberReturn, takeReturn, usePath } from "./router.js";
import { SafetyScreen } from "./safety.js";
import { Settings } from "./settings.js";

const StickerPackScreen = lazy(() => import("./stickers.js"), "StickerPackScreen");
const StoryViewer = lazy(() => import("./stories.js"), "StoryViewer");
const NewStory = lazy(() => import("./stories.js"), "NewStory");
const SearchScreen = lazy(() => import("./search.js"), "SearchScreen");
const JoinScreen = lazy(() => import("./join.js"), "JoinScreen");
const AdminScreen = lazy(() => import("./admin.js"), "AdminScreen");
const VerifyEmailScreen = lazy(() => import("./email.js"), "VerifyEmailScreen");
// Screens for signed-out visitors; "register" is the sign-up link an invite mail holds (#invite=<code>).
const AUTH_MODES = { login: "login", signup: "signup", register: "signup", "reset-password": "reset" };

export function App() {
  const s = useApp();
  const path = usePath();
  const parts = path.split("/").filter(Boolean);
  const authPath = Object.hasOwn(AUTH_MODES, parts[0] ?? "") && parts[0] !== "reset-password"; // a reset works signed in too

  useEffect(() => {
    if (s.phase === "auth" && !authPath && parts[0] !== "reset-password") {
      // an invite link, a verification link, a search: back there after signing in
      rememberReturn(location.pathname + location.search + location.hash);
      navigate("/login", { replace: true });
    }
    if (s.phase === "ready" && authPath) navigate(takeReturn() ?? "/", { replace: true });
  }, [s.phase, authPath]);

  useEffect(() => {
    const chatId = parts[0] === "chats" ? parts[1] : null;
    if (s.phase !== "ready") return;
    if (chatId) app.openChat(chatId);
    else if (s.activeChatId) app.closeChat();
  }, [s.phase, path]);

  // A new screen: move the keyboard focus to its heading, so a screen reader says where you are (a chat
  // focuses its message box instead, on a desktop).
  useEffect(() => {
    if (s.phase !== "ready" || authPath) return;
    const wide = matchMedia("(min-width: 701px)").matches;
    if (parts[0] === "chats" && parts[2] !== "info" && wide) return;
    if (parts[0] === "stories" && parts[1] !== "new") return; // the viewer, a dialog, has the focus
    const heading = document.querySelector("#main h1");
    if (heading && !heading.contains(document.activeElement)) {
      heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: true });
    }
  }, [path, s.phase]);

  if (s.phase === "boot") return html`<main class="boot" aria-busy="true"><p>Loading…</p></main>`;
  if (s.phase === "auth" || authPath || parts[0] === "reset-password") {
    return html`<${StatusBar} /><${AuthScreen} mode=${Object.hasOwn(AUTH_MODES, parts[0] ?? "") ? AUTH_MODES[parts[0]] : "login"} />`;
  }

  let screen = null;
  if (parts[0] === "chats" && parts[1] && parts[2] === "info") screen = html`<${ChatInfo} chatId=${parts[1]} />`;
  else if (parts[0] === "chats" && parts[1]) screen = html`<${ChatScreen} chatId=${parts[1]} />`;
  else if (parts[0] === "new") screen = html`<${NewChat} kind=${parts[1] ?? "direct"} />`;
  else if (parts[0] === "settings") screen = html`<${Settings} part=${parts[1] ?? ""} />`;
  else if (parts[0] === "safety" && parts[1]) screen = html`<${SafetyScreen} userId=${parts[1]} />`;
  else if (parts[0] === "stickers" && parts[1]) screen = html`<${StickerPackScreen} slug=${parts[1]} />`;
  else if (parts[0] === "stories" && parts[1] === "new") screen = html`<${NewStory} />`;
  else if (parts[0] === "search") screen = html`<${SearchScreen} />`;
  else if (parts[0] === "join") screen = html`<${JoinScreen} key=${parts[1]} code=${parts[1] ?? ""} />`;
  else if (parts[0] === "admin") screen = html`<${AdminScreen} part=${parts[1] ?? ""} />`;
  else if (parts[0] === "verify-email") screen = html`<${VerifyEmailScreen} />`;
  // The story viewer covers everything, over the chat list (its path, so Back closes it on a phone).
  const viewer =
    parts[0] === "stories" && parts[1] && parts[1] !== "new"
      ? html`<${StoryViewer} key=${parts[1]} authorId=${parts[1]} storyId=${parts[2] ?? null} />`
      : null;

  return html`<${StatusBar} />
    ${parts[0] === "settings" ? null : html`<${OwnNewDevices} notices=${s.notices} me=${s.me?.id} />`}
    <div class=${`layout ${screen ? "has-screen" : "no-screen"}`}>
      <${ChatList} activeId=${parts[0] === "chats" ? parts[1] : null} />
      <main class="screen" id="main">
        ${
          screen ??
          html`<div class="empty-screen">
          <p class="empty-title">Pick a chat, or start a new one.</p>
          <p>Direct chats and groups are end-to-end encrypted: only their members can read them.</p>
        </div>`
        }
      </main>
    </div>
    ${viewer}
    <${CallOverlay} />`;
}

/**
 * Another login of my own account, on every screen but Settings (whose Devices section says it there): who
 * to sign out, never a safety number (one is compared with someone else).
 */
function OwnNewDevices({ notices, me }) {
  const mine = notices.filter((n) => n.type === "new_device" && n.user_id === me);
  if (!mine.length) return null;
  return html`<div class="notices notices-own">
    ${mine.map(
      (n) => html`<div class="banner banner-key" role="status" key=${n.id}>
        <p>
          A new device signed in to your account: <strong>${deviceLabel(n.device_name, n.device_id)}</strong> — if this
          was not you, <a href="/settings/devices" onClick=${onLink}>sign it out in Settings › Devices</a>.
        </p>
        <p class="banner-actions">
          <button type="button" class="small" onClick=${() => app.act("dismissNotice", n.id)}>Dismiss</button>
        </p>
      </div>`,
    )}
  </div>`;
}
