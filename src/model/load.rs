//! Loading adapters and features from files.
