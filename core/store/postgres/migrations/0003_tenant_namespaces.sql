-- Destination names are unique per tenant, not across tenants: a name one tenant uses tells another nothing and
-- blocks nothing (DESIGN §9). Events also keep the W3C trace context they arrived with.
ALTER TABLE destinations DROP CONSTRAINT destinations_name_key;
CREATE UNIQUE INDEX destinations_tenant_name ON destinations (tenant, name);
ALTER TABLE events ADD COLUMN traceparent text;
