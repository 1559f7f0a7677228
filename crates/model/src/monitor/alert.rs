//! (Owned by the alert work; empty until it lands.)
