-- One table of vassals for every host's emperor (see README.md here).
-- psql -d fleet -f vassals.sql   (idempotent: run it again after an upgrade)

CREATE TABLE IF NOT EXISTS vassals (
    host   text        NOT NULL,                  -- which emperor runs it: WHERE host = '...'
    name   text        NOT NULL,                  -- its file name: the extension picks ini/json/toml/yaml
    config text        NOT NULL,                  -- the file's text
    ts     timestamptz NOT NULL DEFAULT now(),    -- a newer ts reloads the vassal (set by the trigger)
    uid    integer,                               -- whom it runs as, when the emperor is root
    gid    integer,
    PRIMARY KEY (host, name)
);

-- Every change moves ts forward, so an UPDATE of config alone is enough to roll it out.
CREATE OR REPLACE FUNCTION vassals_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.ts := clock_timestamp();
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS vassals_touch ON vassals;
CREATE TRIGGER vassals_touch BEFORE INSERT OR UPDATE ON vassals
    FOR EACH ROW EXECUTE FUNCTION vassals_touch();

-- Wake the emperors (they LISTEN on --emperor-pg-channel, zergserve_vassals by default) when the
-- transaction commits; the payload names the host, though every emperor simply re-reads its rows.
CREATE OR REPLACE FUNCTION vassals_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        PERFORM pg_notify('zergserve_vassals', coalesce(NEW.host, OLD.host));
    ELSE
        PERFORM pg_notify('zergserve_vassals', '');
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS vassals_notify ON vassals;
CREATE TRIGGER vassals_notify AFTER INSERT OR UPDATE OR DELETE ON vassals
    FOR EACH ROW EXECUTE FUNCTION vassals_notify();

DROP TRIGGER IF EXISTS vassals_notify_truncate ON vassals;
CREATE TRIGGER vassals_notify_truncate AFTER TRUNCATE ON vassals
    FOR EACH STATEMENT EXECUTE FUNCTION vassals_notify();
