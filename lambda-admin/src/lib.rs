//! Tollbooth admin.
