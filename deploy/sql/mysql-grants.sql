-- Minimal grants for rpo-exporter's `mysql` kind (MySQL 8, MariaDB 10.x,
-- RDS and Aurora MySQL). Run on the primary as an administrator (on RDS:
-- the master user); the user, its grants and the heartbeat table replicate
-- to the replica. docs/kinds/mysql.md says what each grant is for.

-- The monitoring user (use a password from your secret store).
CREATE USER IF NOT EXISTS 'rpo_monitor'@'%' IDENTIFIED BY 'change-me';

-- Replication status on the replica (SHOW REPLICA STATUS) and the binary log
-- position on the primary (SHOW BINARY LOG STATUS / SHOW MASTER STATUS,
-- SHOW BINARY LOGS).
-- MySQL 8, RDS and Aurora MySQL:
GRANT REPLICATION CLIENT ON *.* TO 'rpo_monitor'@'%';
-- MariaDB 10.5.9 and later: REPLICATION CLIENT is now called BINLOG MONITOR
-- and no longer allows SHOW REPLICA STATUS, which needs REPLICA MONITOR.
-- Uncomment on MariaDB:
-- GRANT BINLOG MONITOR, REPLICA MONITOR ON *.* TO 'rpo_monitor'@'%';

-- The heartbeat canary: one row per exporter instance, overwritten in place,
-- in a database of its own. Name it in the URLs (mysql://rpo_monitor@host:3306/rpo)
-- or in heartbeat.table ("rpo.rpo_heartbeat").
CREATE DATABASE IF NOT EXISTS rpo;
CREATE TABLE IF NOT EXISTS rpo.rpo_heartbeat (
    instance   VARCHAR(255) NOT NULL PRIMARY KEY,
    ts         DOUBLE NOT NULL,
    written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;
GRANT SELECT, INSERT, UPDATE ON rpo.rpo_heartbeat TO 'rpo_monitor'@'%';
-- To let the exporter create the table itself (heartbeat.create_table = true,
-- the default) instead of the CREATE TABLE above:
-- GRANT SELECT, INSERT, UPDATE, CREATE ON rpo.rpo_heartbeat TO 'rpo_monitor'@'%';
