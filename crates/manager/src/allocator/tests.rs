//! Table tests of the allocator.
