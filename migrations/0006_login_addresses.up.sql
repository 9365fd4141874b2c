-- Where each user has logged in from: a keyed hash of (user, client address) and when it last
-- worked. A correct password from a remembered address is never refused by the limits that
-- guessing from elsewhere sets off (docs/api.md#rate-limits).

CREATE TABLE login_addresses (
    user_id {uuid} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address_hash {bytes} NOT NULL,              -- HMAC of the address: the table holds no addresses
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, address_hash)
);
