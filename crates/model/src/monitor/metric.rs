//! (Owned by the metric work; empty until it lands.)
