-- agentreg schema, version 2: instance settings kept with the data.
--
-- `instance_key_fingerprint` names the instance key that sealed the stored private keys (an
-- HMAC of a fixed label under the key, so it reveals nothing about the key). The first replica
-- to start records it; a replica started with another key refuses to start. Snapshots carry it.
CREATE TABLE instance_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
