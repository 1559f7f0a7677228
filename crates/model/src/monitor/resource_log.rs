//! (Owned by the resource_log work; empty until it lands.)
