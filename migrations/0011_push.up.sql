-- Push notifications (Web Push, UnifiedPush): one subscription per device, and what is waiting to
-- be pushed to it (docs/api.md#push-notifications, docs/operations.md#push-notifications).
--
-- The pending_* columns coalesce a burst of events into one push: the first event sets due_at,
-- later ones only move pending_seq; a sender claims due rows with lease_until (several processes
-- never push the same row twice) and clears them once the push service has answered.

CREATE TABLE push_subscriptions (
    device_id {uuid} PRIMARY KEY REFERENCES user_devices (id) ON DELETE CASCADE,
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint TEXT NOT NULL,                     -- the push service's URL for this device
    p256dh TEXT NOT NULL,                       -- the device's P-256 public key (base64url), RFC 8291
    auth TEXT NOT NULL,                         -- the device's 16-byte auth secret (base64url), RFC 8291
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    pending_seq BIGINT,                         -- the newest event of the device's stream not pushed yet
    pending_chat TEXT,                          -- its chat; '' when the burst spans several chats
    due_at BIGINT,                              -- when to push (NULL: nothing waits)
    lease_until BIGINT,                         -- a sender holds the row until then
    attempts INTEGER NOT NULL DEFAULT 0,        -- failed tries of the waiting push
    last_pushed_at BIGINT                       -- the last push the push service accepted
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id);
CREATE INDEX push_subscriptions_due ON push_subscriptions (due_at);
