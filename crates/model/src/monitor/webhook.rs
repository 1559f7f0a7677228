//! (Owned by the webhook work; empty until it lands.)
