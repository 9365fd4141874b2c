"""Stories under /api/v1/stories, and the lists that choose their audience."""

from __future__ import annotations

from sup.domain.stories import AudienceListDetail, Story, StoryFeed, StoryViewPage
from sup.http import schemas as s
from sup.http.api import Call


async def list_stories(call: Call) -> StoryFeed:
    """GET /api/v1/stories: the stories I may see, by author (latest poster first), with what I have seen."""
    query: s.StoryFeedQuery = call.query
    return await call.services.stories.feed(call.who.user_id, before=query.before, limit=query.limit)


async def post_story(call: Call, body: s.StoryPost) -> Story:
    """POST /api/v1/stories: put up a photo or video for an audience, until it expires."""
    return await call.services.stories.post(
        call.who.user_id, media_id=body.media_id, caption=body.caption, audience=body.audience, list_id=body.list_id
    )


async def get_story(call: Call) -> Story:
    """GET /api/v1/stories/{story_id}: one story, if I am in its audience."""
    return await call.services.stories.get(call.who.user_id, call.param("story_id"))


async def delete_story(call: Call) -> None:
    """DELETE /api/v1/stories/{story_id}: take my story down before it expires."""
    await call.services.stories.delete(call.who.user_id, call.param("story_id"))


async def view_story(call: Call) -> None:
    """POST /api/v1/stories/{story_id}/view: mark a story as viewed (the first time counts)."""
    await call.services.stories.view(call.who.user_id, call.param("story_id"))


async def story_views(call: Call) -> StoryViewPage:
    """GET /api/v1/stories/{story_id}/views: who viewed my story and when (the author only)."""
    query: s.StoryViewsQuery = call.query
    return await call.services.stories.views(
        call.who.user_id, call.param("story_id"), before=query.before, limit=query.limit
    )


async def list_audience_lists(call: Call) -> s.AudienceLists:
    """GET /api/v1/stories/lists: my close-friends list and my lists of people to leave out."""
    return s.AudienceLists(lists=await call.services.stories.lists(call.who.user_id))


async def create_audience_list(call: Call, body: s.AudienceListCreate) -> AudienceListDetail:
    """POST /api/v1/stories/lists: a new list of people to leave out (audience contacts_except)."""
    return await call.services.stories.create_list(call.who.user_id, name=body.name, user_ids=body.user_ids)


async def get_audience_list(call: Call) -> AudienceListDetail:
    """GET /api/v1/stories/lists/{list_id}: one of my lists with who is on it (`close-friends` for that one)."""
    return await call.services.stories.get_list(call.who.user_id, call.param("list_id"))


async def update_audience_list(call: Call, body: s.AudienceListUpdate) -> AudienceListDetail:
    """PATCH /api/v1/stories/lists/{list_id}: rename a list, or replace who is on it."""
    return await call.services.stories.update_list(
        call.who.user_id, call.param("list_id"), name=body.name, user_ids=body.user_ids
    )


async def delete_audience_list(call: Call) -> None:
    """DELETE /api/v1/stories/lists/{list_id}: delete a list of people to leave out."""
    await call.services.stories.delete_list(call.who.user_id, call.param("list_id"))


async def add_to_audience_list(call: Call, body: s.UserIds) -> AudienceListDetail:
    """POST /api/v1/stories/lists/{list_id}/members: put people I know on a list."""
    return await call.services.stories.add_to_list(call.who.user_id, call.param("list_id"), body.user_ids)


async def remove_from_audience_list(call: Call) -> None:
    """DELETE /api/v1/stories/lists/{list_id}/members/{user_id}: take someone off a list."""
    await call.services.stories.remove_from_list(call.who.user_id, call.param("list_id"), call.param("user_id"))
