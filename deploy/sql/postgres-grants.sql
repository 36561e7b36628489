-- Minimal grants for rpo-exporter's `postgres` kind. Run on the primary as an
-- administrator; everything replicates to the replica.

-- The monitoring role (use a password from your secret store).
CREATE ROLE rpo_monitor LOGIN PASSWORD 'change-me';

-- pg_stat_replication / pg_stat_wal_receiver details and pg_replication_slots.
GRANT pg_monitor TO rpo_monitor;

-- The heartbeat canary: one row per exporter instance, overwritten in place.
CREATE TABLE IF NOT EXISTS rpo_heartbeat (
    instance   text PRIMARY KEY,
    ts         double precision NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON rpo_heartbeat TO rpo_monitor;
