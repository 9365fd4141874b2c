// Stories for the state (state.js; docs/api.md "Stories": not end-to-end encrypted): the authors with stories
// I may see, kept in the snapshot without what has expired, and what the events and I change in them.

export class Stories {
  /** @param {import("./state.js").AppState} app */
  constructor(app) {
    this.app = app;
    this.timer = null; // the next look for stories that expired
  }

  /** Every author with stories I may see, page by page. */
  async load() {
    const authors = [];
    let before;
    do {
      const page = await this.app.api.stories(before);
      authors.push(...page.authors);
      before = page.next_cursor;
    } while (before);
    this.show(authors);
  }

  /** Keep what has not expired (a story is gone at `expires_at`, and no event says so), and look again then. */
  show(groups) {
    const now = Date.now();
    const live = [];
    for (const group of groups) {
      const stories = group.stories.filter((st) => st.expires_at > now);
      if (stories.length) live.push({ ...group, stories, all_seen: stories.every((st) => st.seen) });
    }
    this.app.set({ stories: live });
    clearTimeout(this.timer);
    const next = Math.min(...live.flatMap((g) => g.stories.map((st) => st.expires_at)));
    if (Number.isFinite(next)) {
      // setTimeout takes at most 2^31-1 ms; a story lives a day or so
      this.timer = setTimeout(
        () => this.show(this.app.snapshot.stories ?? []),
        Math.min(next - now + 50, 2 ** 31 - 1),
      );
    }
  }

  stop() {
    clearTimeout(this.timer);
  }

  /** story.new (the author first: whoever posted last comes first) and story.deleted. */
  onEvent(frame) {
    const groups = this.app.snapshot.stories;
    if (groups === null) return;
    if (frame.type === "story.deleted") {
      this.show(groups.map((g) => ({ ...g, stories: g.stories.filter((st) => st.id !== frame.story_id) })));
      return;
    }
    const { story, author } = frame;
    const found = groups.find((g) => g.author.id === author.id);
    const stories = [story, ...(found?.stories ?? []).filter((st) => st.id !== story.id)];
    this.show([{ author, stories, all_seen: false }, ...groups.filter((g) => g !== found)]);
  }

  /** Mark a story of someone else viewed (its author sees who viewed it); once. */
  async view(story) {
    if (story.seen || story.author_id === this.app.snapshot.me?.id) return;
    this._patch(story.id, { seen: true });
    await this.app.api.viewStory(story.id).catch((error) => console.warn("could not mark a story viewed", error));
  }

  _patch(storyId, fields) {
    const groups = this.app.snapshot.stories ?? [];
    this.show(
      groups.map((g) => ({ ...g, stories: g.stories.map((st) => (st.id === storyId ? { ...st, ...fields } : st)) })),
    );
  }

  /**
   * Put up a photo or video (uploaded as it is: stories are not end-to-end encrypted) for an audience:
   * "chats", "contacts", "close_friends", or "contacts_except" with the list of people left out.
   */
  async post({ file, audience, caption = "", listId = null }) {
    const media = await this.app.api.upload(file, { filename: file.name || "story" });
    const body = { media_id: media.id, audience, caption };
    if (listId) body.list_id = listId;
    const story = await this.app.api.postStory(body);
    this.onEvent({ type: "story.new", story, author: this.app.snapshot.me });
    return story;
  }

  async remove(storyId) {
    await this.app.api.deleteStory(storyId);
    this.onEvent({ type: "story.deleted", story_id: storyId });
  }

  /**
   * Answer a story in the direct chat with its author: an encrypted message whose envelope names the story
   * (`story: {id, author_id}`), so the server learns neither that it answers a story nor which.
   */
  async reply(story, author, text) {
    let chat = this.app.snapshot.chats.find((c) => c.type === "direct" && c.peer?.id === story.author_id);
    if (!chat) chat = await this.app.act("createDirect", author.username);
    return this.app.act("send", chat.id, { text, story: { id: story.id, author_id: story.author_id } });
  }
}
