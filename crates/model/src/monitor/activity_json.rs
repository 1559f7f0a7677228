//! (Owned by the activity_json work; empty until it lands.)
