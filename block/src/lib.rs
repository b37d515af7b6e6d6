//! The block graph: nodes, format and protocol drivers, I/O engine, dirty
//! bitmaps, block jobs, NBD server and image creation.
//!
//! The block layer core arrives with its own issue.
