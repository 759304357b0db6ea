//! Tests of the networks feed: what each node is sent as the store changes.
