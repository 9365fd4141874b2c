"""Chat permissions: flags held by roles. Owner, admin and member are built in; chats add custom roles."""

from __future__ import annotations

from enum import IntFlag


class Permission(IntFlag):
    SEND_MESSAGES = 1
    SEND_MEDIA = 2
    ADD_MEMBERS = 4
    REMOVE_MEMBERS = 8
    PIN = 16
    DELETE_OTHERS = 32
    EDIT_INFO = 64
    MANAGE_ROLES = 128
    INVITE_USERS = 256  # make, list and revoke invite links; approve join requests


ALL = Permission(sum(Permission))
# Who may manage members may see them: in a channel no one else does (subscribers do not see each other).
MANAGE_MEMBERS = Permission.ADD_MEMBERS | Permission.REMOVE_MEMBERS
NAMES = {p.name.lower(): p for p in Permission}

# Default permissions of the built-in roles, per chat type. The owner always holds all.
DEFAULTS: dict[str, dict[str, Permission]] = {
    "direct": {
        "owner": ALL,
        "admin": ALL,
        "member": Permission.SEND_MESSAGES | Permission.SEND_MEDIA | Permission.PIN,
    },
    "group": {
        "owner": ALL,
        "admin": ALL & ~Permission.MANAGE_ROLES,
        # Members add people they know, one by one; a link anyone may pass on is for admins.
        "member": Permission.SEND_MESSAGES | Permission.SEND_MEDIA | Permission.ADD_MEMBERS,
    },
    "channel": {
        "owner": ALL,
        "admin": ALL & ~Permission.MANAGE_ROLES,
        "member": Permission(0),  # subscribers read
    },
}

# Higher rank may act on lower rank (remove, change role); custom roles rank with members.
RANK = {"owner": 3, "admin": 2, "custom": 1, "member": 1}


def to_names(flags: int) -> list[str]:
    return [name for name, flag in NAMES.items() if flags & flag]


def from_names(names: list[str]) -> Permission:
    flags = Permission(0)
    for name in names:
        flags |= NAMES[name]
    return flags
