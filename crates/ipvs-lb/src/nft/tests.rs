//! Unit tests of the plan and of reading a listing back.
