-- SIEM sinks the operator registers (`moat monitor sink add`): syslog over TLS and HTTP JSON collectors. A
-- diagnostic setting names one by its id in `marketplacePartnerId`, compared case-insensitively as ARM ids are.
-- `config` is what may be shown (address, URL, CA certificates, app name, facility, header names, the Key Vault
-- URI of a token): no secret in clear. `sealed` holds the secrets (custom header values, a client key), sealed
-- under the secrets key and bound to the id (moat_auth::SecretBox), or NULL when there are none.
CREATE TABLE partner_sinks (
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    sealed TEXT,
    created TEXT NOT NULL
);
CREATE UNIQUE INDEX partner_sinks_id ON partner_sinks(lower(id));
-- The CLI addresses a sink by name: one name, one sink, whatever its resource group.
CREATE UNIQUE INDEX partner_sinks_name ON partner_sinks(lower(name));
