//! Byte-vector tests of the nf_tables messages (placeholder, filled below).
