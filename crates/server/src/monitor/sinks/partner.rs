//! SIEM sinks an operator registers with `moat monitor sink add` (syslog over TLS, HTTP JSON) and a diagnostic
//! setting names through `marketplacePartnerId`. (Owned by the SIEM-sinks work; a stub until it lands.)
